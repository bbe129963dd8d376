//! `sshmail doctor`: every hop between here and each account's mailbox,
//! checked in the order the mail travels, each a PASS, WARN or FAIL line
//! with what to do. An account's remote hops stop at its first FAIL (what
//! comes after depends on it); the local ones (delivery, ledger) and the
//! machine-wide ones (send, daemon, forwards) are checked whatever came
//! before. Nothing is changed anywhere: no message is fetched, flagged or
//! sent, and a probe file written to test a directory is removed at once.
//! No secret is printed: errors are the same redacted texts a fetch prints.

mod local;
mod remote;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::config;
use crate::error::{Error, Exit};

/// How a hop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// It works.
    Pass,
    /// It works, but something will bite.
    Warn,
    /// It does not work.
    Fail,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// The report, printed as it is made (a hop that hangs shows where).
pub struct Report {
    out: Box<dyn std::io::Write + Send>,
    /// The exit code of the first FAIL.
    first_failure: Option<Exit>,
    fails: usize,
    warns: usize,
    /// The ssh_config file read, to name the line of a directive.
    ssh_config: std::path::PathBuf,
}

impl Report {
    fn new() -> Report {
        Report {
            out: Box::new(std::io::stdout()),
            first_failure: None,
            fails: 0,
            warns: 0,
            ssh_config: crate::config::home().join(".ssh/config"),
        }
    }

    /// `FILE:LINE` of the first line setting `directive` in the ssh_config
    /// file, or the file alone (the line may be in an included file).
    fn ssh_config_line(&self, directive: &str) -> String {
        let text = std::fs::read_to_string(&self.ssh_config).unwrap_or_default();
        let line = text.lines().position(|l| {
            let word = l.trim_start().split(|c: char| c.is_whitespace() || c == '=').next().unwrap_or("");
            word.eq_ignore_ascii_case(directive)
        });
        match line {
            Some(n) => format!("{}:{}", self.ssh_config.display(), n + 1),
            None => format!("{} (or a file it includes)", self.ssh_config.display()),
        }
    }

    fn heading(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
    }

    /// One hop.
    pub fn hop(&mut self, status: Status, hop: &str, what: impl AsRef<str>, fix: Option<&str>) {
        let what = printable(what.as_ref());
        let _ = writeln!(self.out, "  {} {hop:<13} {what}", status.word());
        if let Some(fix) = fix {
            let _ = writeln!(self.out, "       {:<13} fix: {}", "", printable(fix));
        }
        let _ = self.out.flush();
        match status {
            Status::Pass => {}
            Status::Warn => self.warns += 1,
            Status::Fail => self.fails += 1,
        }
    }

    fn pass(&mut self, hop: &str, what: impl AsRef<str>) {
        self.hop(Status::Pass, hop, what, None);
    }

    fn warn(&mut self, hop: &str, what: impl AsRef<str>, fix: &str) {
        self.hop(Status::Warn, hop, what, Some(fix));
    }

    /// A FAIL; `exit` is what `sshmail fetch` would exit with for it.
    fn fail(&mut self, hop: &str, what: impl AsRef<str>, fix: &str, exit: Exit) {
        self.hop(Status::Fail, hop, what, Some(fix));
        self.first_failure.get_or_insert(exit);
    }

    /// A FAIL for an error, graded as a fetch grades it.
    fn error(&mut self, hop: &str, e: &Error, fix: &str) {
        self.fail(hop, e.to_string(), fix, e.exit());
    }
}

/// What a server says, shown and never obeyed by the terminal.
fn printable(text: &str) -> String {
    crate::term::one_line(text, 600)
}

/// Where `doctor` looks.
pub struct Args<'a> {
    /// Accounts to check; all when empty.
    pub accounts: &'a [String],
    /// The config file given, if any.
    pub config: Option<&'a Path>,
    /// The ssh_config file given, if any.
    pub ssh_config: Option<&'a Path>,
}

/// Runs every check; exit 0 when nothing FAILed, else the exit code a
/// fetch would have for the first FAIL.
pub async fn run(args: Args<'_>) -> Exit {
    let mut report = Report::new();
    if let Some(p) = args.ssh_config {
        report.ssh_config = p.to_path_buf();
    }
    let (path, default) = crate::config::config_path(args.config);
    report.heading(&format!("config {}", path.display()));
    let overrides = config::Overrides { ssh_config: args.ssh_config.map(Path::to_path_buf), ..Default::default() };
    let Some(config) = load(&mut report, &path, &overrides) else {
        return finish(report);
    };
    match &config.ssh_config_error {
        None => report
            .pass("ssh_config", args.ssh_config.map(|p| p.display().to_string()).unwrap_or("~/.ssh/config".into())),
        Some(e) => {
            report.error("ssh_config", e, "fix the line it names (sshmail reads it as OpenSSH does)");
            return finish(report);
        }
    }
    let names: Vec<String> =
        if args.accounts.is_empty() { config.accounts.keys().cloned().collect() } else { args.accounts.to_vec() };
    if let Some(name) = names.iter().find(|n| !config.accounts.contains_key(*n)) {
        report.fail("config", format!("no account {name:?} in {}", path.display()), "check the name", Exit::Usage);
        return finish(report);
    }
    for name in &names {
        report.heading(&format!("account {name}"));
        let account = match config.account(name) {
            Ok(a) => a,
            Err(e) => {
                report.error("config", &e, "fix the account's table (or its host's lines in ~/.ssh/config)");
                continue;
            }
        };
        let route = &account.route;
        // On a terminal, doctor asks what fetch would ask (a passphrase,
        // a password, the server's questions).
        let pool = crate::ssh::SshPool::new().prompting();
        let before = report.fails;
        if account.fetch.enabled {
            remote::account(&mut report, account, &pool).await;
            local::delivery(&mut report, account).await;
            local::ledger(&mut report, account);
            local::hooks(&mut report, account).await;
        } else if account.serve.endpoints.iter().any(|e| e.service == config::Service::of(account.protocol)) {
            // Served only: its own protocol's route, as a client of the
            // endpoint meets it (nothing is delivered).
            remote::account(&mut report, account, &pool).await;
        } else if account.send.is_some() || !account.serve.endpoints.is_empty() {
            remote::connect(&mut report, route, &pool).await;
        }
        for why in &account.serve.unresolved {
            report.warn("serve", why, "sshmail daemon, in your login session, places it");
        }
        // The relay goes through the same SSH connection: checked when it
        // is up (a fetch account's failure may be past it, at its server).
        if let Some(send) = &account.send
            && (report.fails == before || pool.connections() > 0)
        {
            remote::relay(&mut report, account, send, &pool).await;
        }
        pool.close_all().await;
    }
    report.heading("this machine");
    local::sendmail(&mut report);
    local::outbox(&mut report);
    local::daemon(&mut report, &path, default).await;
    local::forwards(&mut report);
    finish(report)
}

/// Loads and resolves the config: the `config` hop.
fn load(report: &mut Report, path: &Path, overrides: &config::Overrides) -> Option<config::Config> {
    if !path.exists() {
        report.fail(
            "config",
            format!("no config file at {}", path.display()),
            "write one (man sshmail, CONFIGURATION), or import one: sshmail import fetchmailrc > FILE",
            Exit::Usage,
        );
        return None;
    }
    let config = match config::Config::load(Some(path), overrides) {
        Ok(c) => c,
        Err(e) => {
            let fix = match e {
                Error::Permissions(_) => "chmod 600 the file (it holds a password)",
                _ => "fix the line it names",
            };
            report.error("config", &e, fix);
            return None;
        }
    };
    if config.accounts.is_empty() {
        report.fail("config", format!("{} defines no [account.NAME]", path.display()), "add one", Exit::Usage);
        return None;
    }
    report.pass(
        "config",
        format!("{} parses: {} account(s), mode {}", path.display(), config.accounts.len(), mode(path)),
    );
    Some(config)
}

fn mode(path: &Path) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).map(|m| format!("{:o}", m.permissions().mode() & 0o777)).unwrap_or_else(|_| "?".into())
}

fn finish(mut report: Report) -> Exit {
    let summary = match report.fails {
        0 => format!("nothing failed ({} warning(s))", report.warns),
        n => format!("{n} failed, {} warning(s)", report.warns),
    };
    report.heading(&summary);
    match report.first_failure {
        None => Exit::Delivered,
        Some(e) => e,
    }
}

/// The directory a file or directory `path` would be made in: the nearest
/// existing ancestor.
fn existing_ancestor(path: &Path) -> Option<PathBuf> {
    path.ancestors().skip(1).find(|p| p.exists()).map(Path::to_path_buf)
}
