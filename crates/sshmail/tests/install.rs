//! `scripts/install`: a fresh prefix gets the binary, a man page that `man`
//! finds and renders without warnings, completions that bash, zsh and fish
//! load and answer with, the systemd user unit, and optionally the
//! `sendmail` link; `--uninstall` takes exactly that away again.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn install(home: &Path, prefix: &Path, extra: &[&str]) -> Output {
    Command::new(repo().join("scripts/install"))
        .arg("--prefix")
        .arg(prefix)
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_sshmail"))
        .args(extra)
        .env("HOME", home)
        .env("PATH", format!("{}:/usr/local/bin:/usr/bin:/bin", prefix.join("bin").display()))
        .output()
        .expect("run scripts/install")
}

fn ok(out: &Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{:?}: {text}", out.status);
    text
}

/// Runs a shell snippet with the prefix's bin first in PATH.
fn shell(program: &str, args: &[&str], prefix: &Path) -> Output {
    Command::new(program)
        .args(args)
        .env("PATH", format!("{}:/usr/bin:/bin", prefix.join("bin").display()))
        .output()
        .unwrap_or_else(|e| panic!("{program} must be installed (scripts/install-deps): {e}"))
}

#[test]
fn a_fresh_prefix_gets_binary_man_page_completions_and_unit_and_uninstall_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let prefix = dir.path().join("prefix");
    let config = home.join(".config/sshmail/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "# mine\n").unwrap();

    let said = ok(&install(&home, &prefix, &["--sendmail-link"]));
    let bin = prefix.join("bin/sshmail");
    let man = prefix.join("share/man/man1/sshmail.1");
    let bash = prefix.join("share/bash-completion/completions/sshmail");
    let zsh = prefix.join("share/zsh/site-functions/_sshmail");
    let fish = prefix.join("share/fish/vendor_completions.d/sshmail.fish");
    let unit = prefix.join("share/systemd/user/sshmail.service");
    for f in [&bin, &man, &bash, &zsh, &fish, &unit] {
        assert!(f.is_file(), "{} not installed: {said}", f.display());
        assert!(said.contains(&format!("installed {}", f.display())), "{said}");
    }

    // The binary runs, and is the one that was built.
    let version = ok(&Command::new(&bin).arg("--version").output().unwrap());
    assert_eq!(version.trim(), format!("sshmail {}", env!("CARGO_PKG_VERSION")));

    // `man sshmail` finds the page from PATH alone (man-db maps PREFIX/bin
    // to PREFIX/share/man), and it renders without a warning.
    let found = ok(&shell("man", &["-w", "sshmail"], &prefix));
    assert_eq!(Path::new(found.trim()), man, "man -w found another page");
    let rendered = shell("man", &["--warnings", "-l", man.to_str().unwrap()], &prefix);
    assert!(rendered.status.success());
    assert_eq!(String::from_utf8_lossy(&rendered.stderr), "", "groff warned");
    let text = String::from_utf8_lossy(&rendered.stdout);
    for expected in ["sshmail fetch", "--accept-new-host-key", "EXIT STATUS", "sshmail completions"] {
        assert!(text.contains(expected), "the rendered page lacks {expected}");
    }

    // bash: the completion function completes subcommands and options.
    let script = format!(
        r#"source {}
complete -p sshmail
COMP_WORDS=(sshmail fe); COMP_CWORD=1; COMP_LINE="sshmail fe"; COMP_POINT=${{#COMP_LINE}}
_sshmail sshmail fe sshmail; echo "subcommands: ${{COMPREPLY[*]}}"
COMP_WORDS=(sshmail fetch --accept-n); COMP_CWORD=2; COMP_LINE="sshmail fetch --accept-n"; COMP_POINT=${{#COMP_LINE}}
_sshmail sshmail --accept-n fetch; echo "options: ${{COMPREPLY[*]}}"
COMP_WORDS=(sshmail completions z); COMP_CWORD=2; COMP_LINE="sshmail completions z"; COMP_POINT=${{#COMP_LINE}}
_sshmail sshmail z completions; echo "shells: ${{COMPREPLY[*]}}""#,
        bash.display()
    );
    let out = ok(&shell("bash", &["--norc", "-c", &script], &prefix));
    assert!(out.contains("subcommands: fetch"), "{out}");
    assert!(out.contains("options: --accept-new-host-key"), "{out}");
    assert!(out.contains("shells: zsh\n"), "{out}");

    // fish: the completions answer for a partial command line.
    let script =
        format!("source {}; complete -C 'sshmail fe'; complete -C 'sshmail tunnel uni --protocol '", fish.display());
    let out = ok(&shell("fish", &["--no-config", "-c", &script], &prefix));
    assert!(out.lines().any(|l| l.starts_with("fetch")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("imap")), "{out}");

    // zsh: the file parses and autoloads from the installed fpath directory.
    let script = format!(
        "fpath=({} $fpath); autoload -Uz compinit; compinit -u -D; autoload -Uz _sshmail; whence -w _sshmail; echo $_comps[sshmail]",
        zsh.parent().unwrap().display()
    );
    let out = ok(&shell("zsh", &["-f", "-c", &script], &prefix));
    assert!(out.contains("_sshmail: function"), "{out}");
    assert!(out.trim_end().ends_with("_sshmail"), "compinit did not bind sshmail: {out}");
    ok(&shell("zsh", &["-n", zsh.to_str().unwrap()], &prefix));

    // The unit starts the installed binary.
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    assert!(unit_text.contains(&format!("\nExecStart=\"{}\" daemon\n", bin.display())), "{unit_text}");

    // The sendmail and mailq links run sshmail as sendmail.
    for name in ["sendmail", "mailq"] {
        let link = prefix.join("bin").join(name);
        assert_eq!(std::fs::read_link(&link).unwrap(), bin, "{name}");
    }
    let out = Command::new(prefix.join("bin/mailq")).env("HOME", &home).env_remove("XDG_STATE_HOME").output().unwrap();
    assert!(out.status.success(), "{out:?}");

    // Installing again replaces what is there.
    ok(&install(&home, &prefix, &["--sendmail-link"]));

    ok(&install(&home, &prefix, &["--uninstall", "--sendmail-link"]));
    for f in [&bin, &man, &bash, &zsh, &fish, &unit, &prefix.join("bin/sendmail"), &prefix.join("bin/mailq")] {
        assert!(!f.exists() && f.symlink_metadata().is_err(), "{} left after --uninstall", f.display());
    }
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# mine\n", "uninstall touched the config");
}

#[test]
fn a_sendmail_that_is_not_ours_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("prefix");
    let other = prefix.join("sbin/sendmail");
    std::fs::create_dir_all(other.parent().unwrap()).unwrap();
    std::fs::write(&other, "#!/bin/sh\n# the MTA's\n").unwrap();

    let out = install(dir.path(), &prefix, &["--sendmail-link", other.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(&format!("{} exists and is not sshmail; left alone", other.display())), "{said}");
    assert_eq!(std::fs::read_to_string(&other).unwrap(), "#!/bin/sh\n# the MTA's\n");
    // The rest is installed, and mailq (free) is linked.
    assert!(prefix.join("bin/sshmail").is_file());
    assert!(prefix.join("sbin/mailq").symlink_metadata().unwrap().file_type().is_symlink());

    ok(&install(dir.path(), &prefix, &["--uninstall", "--sendmail-link", other.to_str().unwrap()]));
    assert_eq!(
        std::fs::read_to_string(&other).unwrap(),
        "#!/bin/sh\n# the MTA's\n",
        "uninstall removed another sendmail"
    );
    assert!(prefix.join("sbin/mailq").symlink_metadata().is_err());
}

/// Regression: a prefix with a space made an `ExecStart=` systemd cannot
/// run (and the install exited 0), and one with `&` or `|` broke the
/// script's sed. The unit is checked with `systemd-analyze verify`, and the
/// installed binary is stripped.
#[test]
fn regression_a_prefix_with_spaces_and_shell_characters_gets_a_unit_systemd_runs_and_a_stripped_binary() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let prefix = dir.path().join("my prefix & co|x%y$z");
    ok(&install(&home, &prefix, &[]));
    let unit = prefix.join("share/systemd/user/sshmail.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    let bin = prefix.join("bin/sshmail").display().to_string().replace('%', "%%");
    assert!(text.contains(&format!("\nExecStart=\"{bin}\" daemon\n")), "{text}");
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (systemd) must be installed");
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    let installed = std::fs::metadata(prefix.join("bin/sshmail")).unwrap().len();
    let built = std::fs::metadata(env!("CARGO_BIN_EXE_sshmail")).unwrap().len();
    assert!(installed < built / 2, "the installed binary is not stripped: {installed} of {built} bytes");
    let out = Command::new(prefix.join("bin/sshmail")).arg("--version").output().unwrap();
    assert!(out.status.success());
}
