//! Generates, from the clap definitions in `src/cli/args.rs` (the one place
//! the command line is described), the manual page and the bash, zsh and
//! fish completions into `OUT_DIR`, where the binary embeds them.
//!
//! The manual page is `doc/sshmail.1.in`, the prose, with its `@SYNOPSIS@`
//! and `@COMMANDS@` lines replaced by what clap_mangen renders of every
//! command, so an option cannot be missing from it or described twice.

#![forbid(unsafe_code)]

#[allow(dead_code)]
#[path = "src/cli/args.rs"]
mod args;

use std::io;
use std::path::PathBuf;

use clap::CommandFactory as _;
use clap_complete::Shell;

fn main() -> io::Result<()> {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let template = manifest.join("../../doc/sshmail.1.in");
    println!("cargo::rerun-if-changed=src/cli/args.rs");
    println!("cargo::rerun-if-changed={}", template.display());

    let mut cli = args::Cli::command();
    cli.build();
    for (shell, file) in [(Shell::Bash, "sshmail.bash"), (Shell::Zsh, "_sshmail"), (Shell::Fish, "sshmail.fish")] {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cli.clone(), "sshmail", &mut script);
        std::fs::write(out.join(file), script)?;
    }
    let man = manual(&std::fs::read_to_string(&template)?, &cli)?;
    std::fs::write(out.join("sshmail.1"), man)
}

/// The template with its placeholder lines filled in.
fn manual(template: &str, cli: &clap::Command) -> io::Result<String> {
    let mut synopsis = Vec::new();
    let mut commands = String::from(".SH COMMANDS\n");
    commands.push_str(&options(cli, "Options of every command")?);
    for sub in visible(cli) {
        walk(sub, &mut synopsis, &mut commands)?;
    }
    let mut page = String::new();
    for line in template.lines() {
        match line {
            "@SYNOPSIS@" => page.push_str(&synopsis.join(".br\n")),
            "@STRINGS@" => page.push_str(".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n"),
            "@COMMANDS@" => page.push_str(&commands),
            _ => {
                page.push_str(&line.replace("@VERSION@", env!("CARGO_PKG_VERSION")));
                page.push('\n');
            }
        }
    }
    Ok(page)
}

/// One command's synopsis lines and its section, then its subcommands'.
fn walk(cmd: &clap::Command, synopsis: &mut Vec<String>, commands: &mut String) -> io::Result<()> {
    let cmd = own_arguments(cmd);
    let name = cmd.get_bin_name().unwrap_or_else(|| cmd.get_name()).to_string();
    if !cmd.is_subcommand_required_set() {
        synopsis.extend(synopsis_lines(&cmd, &name));
    }
    commands.push_str(&format!(".SS \"{name}\"\n"));
    let about = cmd.get_long_about().or_else(|| cmd.get_about()).map(|a| a.to_string()).unwrap_or_default();
    for paragraph in about.split("\n\n") {
        commands.push_str(&format!(".PP\n{}\n", escape(&paragraph.replace('\n', " "))));
    }
    commands.push_str(&options(&cmd, "Options")?);
    for sub in visible(&cmd) {
        walk(sub, synopsis, commands)?;
    }
    Ok(())
}

/// The command's options, grouped under their help headings.
fn options(cmd: &clap::Command, first: &str) -> io::Result<String> {
    if cmd.get_arguments().all(|a| a.is_hide_set()) {
        return Ok(String::new());
    }
    let first = if cmd.get_arguments().all(|a| a.is_hide_set() || a.is_positional()) { "Operands" } else { first };
    let text = strip_preamble(&render(cmd, clap_mangen::Man::render_options_section)?);
    let headings: Vec<&str> = cmd.get_arguments().filter_map(|a| a.get_help_heading()).collect();
    let mut out = String::new();
    for line in text.lines() {
        match line.strip_prefix(".SH ") {
            Some(upper) => {
                let upper = upper.trim_matches('"');
                let heading = match upper {
                    "OPTIONS" => first,
                    _ => headings.iter().find(|h| h.to_uppercase() == upper).copied().unwrap_or(upper),
                };
                out.push_str(&format!(".PP\n.I \"{heading}:\"\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    Ok(out)
}

/// The subcommands a user sees (not clap's own `help`).
fn visible(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

/// The command without what every command has (the global options, help,
/// version), which the page describes once.
fn own_arguments(cmd: &clap::Command) -> clap::Command {
    cmd.clone().mut_args(|a| {
        let shared = a.is_global_set() || matches!(a.get_id().as_str(), "help" | "version");
        if shared { a.hide(true) } else { a }
    })
}

fn render(
    cmd: &clap::Command,
    part: fn(&clap_mangen::Man, &mut dyn io::Write) -> io::Result<()>,
) -> io::Result<String> {
    let mut buf = Vec::new();
    part(&clap_mangen::Man::new(cmd.clone()), &mut buf)?;
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The command's forms: its overridden usage, or its name, its options
/// (`[options]` when there are many) and its operands.
fn synopsis_lines(cmd: &clap::Command, name: &str) -> Vec<String> {
    if let Some(usage) = cmd.get_overridden_usage() {
        // A form's continuation lines (indented) join it.
        let mut forms: Vec<String> = Vec::new();
        for line in usage.to_string().lines().map(str::trim).filter(|l| !l.is_empty()) {
            match forms.last_mut() {
                Some(form) if !line.starts_with(name) => {
                    form.push(' ');
                    form.push_str(line);
                }
                _ => forms.push(line.to_string()),
            }
        }
        return forms
            .iter()
            .map(|form| match form.strip_prefix(name) {
                Some(rest) => format!("\\fB{}\\fR{}\n", escape(name), escape(rest)),
                None => format!("{}\n", escape(form)),
            })
            .collect();
    }
    let mut line = format!("\\fB{}\\fR", escape(name));
    let flags: Vec<&clap::Arg> = cmd.get_arguments().filter(|a| !a.is_hide_set() && !a.is_positional()).collect();
    if flags.len() > 3 {
        line.push_str(" [\\fIoptions\\fR]");
    } else {
        for flag in flags {
            let spelled = match (flag.get_long(), flag.get_short()) {
                (Some(long), _) => format!("\\-\\-{}", escape(long)),
                (None, Some(short)) => format!("\\-{short}"),
                (None, None) => continue,
            };
            line.push_str(&format!(" [\\fB{spelled}\\fR{}]", value(flag)));
        }
    }
    for operand in cmd.get_arguments().filter(|a| !a.is_hide_set() && a.is_positional()) {
        let many = operand.get_num_args().is_some_and(|n| n.max_values() > 1);
        let text = format!("{}{}", value(operand).trim_start(), if many { " ..." } else { "" });
        if operand.is_required_set() {
            line.push_str(&format!(" {text}"));
        } else {
            line.push_str(&format!(" [{text}]"));
        }
    }
    if visible(cmd).next().is_some() {
        line.push_str(" [\\fIcommand\\fR]");
    }
    line.push('\n');
    vec![line]
}

/// ` VALUE` for an argument that takes one: its choices, or its name.
fn value(arg: &clap::Arg) -> String {
    if !arg.get_num_args().is_some_and(|n| n.takes_values()) {
        return String::new();
    }
    let choices: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| format!("\\fB{}\\fR", escape(v.get_name())))
        .collect();
    if !choices.is_empty() {
        return format!(" {}", choices.join("|"));
    }
    let names = arg.get_value_names().map(|n| n.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap_or_default();
    let name = names.first().cloned().unwrap_or_else(|| arg.get_id().to_string().to_uppercase());
    format!(" \\fI{}\\fR", escape(&name.to_lowercase()))
}

/// Drops the string definitions roff puts before every fragment; the page
/// defines them once.
fn strip_preamble(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with(".ie \\n(.g") && !l.starts_with(".el .ds Aq"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Text for a roff text line: backslashes and hyphens escaped, and no
/// control character at the start.
fn escape(text: &str) -> String {
    let text = text.replace('\\', "\\e").replace('-', "\\-");
    if text.starts_with('.') || text.starts_with('\'') { format!("\\&{text}") } else { text }
}
