//! `sshmail import fetchmailrc [FILE]`: a `.fetchmailrc` as an sshmail
//! config. The TOML goes to stdout, one warning per line not carried over
//! to stderr. A config that holds a password must not be readable by
//! others (`config::load` refuses it): when stdout is a regular file, it is
//! made 0600 before anything is written to it.

pub mod convert;
pub mod lexer;
pub mod rc;

use std::io::Write as _;
use std::path::Path;

use crate::error::{Error, Exit};
use convert::Converted;

/// Reads and converts an rc file. Errors name the file and line.
pub fn fetchmailrc(text: &str) -> Result<Converted, String> {
    rc::parse(text).map(|rc| convert::convert(&rc))
}

/// The TOML of an import. `source` is named in the heading comment.
pub fn render(c: &Converted, source: &str) -> String {
    let mut t = format!(
        "# sshmail config, imported from {source} by `sshmail import fetchmailrc`.\n\
         # Try it with `sshmail fetch --check`; the manual (man sshmail) lists every key.\n"
    );
    if let Some(i) = c.daemon_interval {
        t.push_str(&format!("\n[daemon]\n# `set daemon {i}`\ninterval = {i}\n"));
    }
    for a in &c.accounts {
        t.push_str(&format!("\n# {}\n[account.{}]\n", a.origin, key(&a.name)));
        // The keys in the raw type's order; an import sets no sub-table.
        t.push_str(&toml::to_string(&a.raw).expect("a raw account is TOML"));
        for n in &a.notes {
            t.push_str(&format!("# {n}\n"));
        }
    }
    t
}

fn key(k: &str) -> String {
    if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        k.to_string()
    } else {
        toml::Value::String(k.to_string()).to_string()
    }
}

/// Runs `sshmail import fetchmailrc [FILE]`.
pub fn run(file: Option<&Path>) -> Exit {
    let path = file.map(Path::to_path_buf).unwrap_or_else(|| crate::config::home().join(".fetchmailrc"));
    let text = match std::fs::read(&path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => {
            crate::errln!("sshmail: cannot read {}: {e}", path.display());
            return Exit::Usage;
        }
    };
    let converted = match fetchmailrc(&text) {
        Ok(c) => c,
        Err(e) => {
            crate::errln!("sshmail: {}: {e}", path.display());
            return Exit::Usage;
        }
    };
    let toml = render(&converted, &path.display().to_string());
    // What is written must load: a bug here is caught before the user's file is.
    if let Err(e) = check(&toml) {
        crate::errln!("sshmail: internal error: the imported config does not load: {e}");
        return Exit::Usage;
    }
    for w in &converted.warnings {
        crate::errln!("sshmail: {}: {w}", path.display());
    }
    if converted.accounts.is_empty() {
        crate::errln!("sshmail: {}: no account could be imported", path.display());
    }
    if converted.has_password() {
        match protect_stdout() {
            Ok(true) => crate::errln!(
                "sshmail: the config holds a password: the file on stdout is now readable by you alone (mode 600)"
            ),
            Ok(false) => crate::errln!(
                "sshmail: the config holds a password: save it where only you can read it, e.g. \
                 (umask 077; sshmail import fetchmailrc > ~/.config/sshmail/config.toml); sshmail refuses a \
                 config with a password that others can read"
            ),
            Err(e) => {
                crate::errln!("sshmail: the config holds a password, and stdout could not be made private: {e}");
                return Exit::Usage;
            }
        }
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(toml.as_bytes()).and_then(|()| out.flush()) {
        crate::errln!("sshmail: cannot write the config: {e}");
        return Exit::Usage;
    }
    if converted.accounts.is_empty() { Exit::Usage } else { Exit::Delivered }
}

/// Loads the TOML as sshmail would and resolves every account.
pub fn check(toml: &str) -> Result<(), Error> {
    let config = crate::config::Config::parse(toml, Path::new("<import>"), &crate::config::Overrides::default())?;
    for account in config.accounts.into_values() {
        account?;
    }
    Ok(())
}

/// Makes stdout mode 0600 if it is a regular file of ours; `false` if it is
/// not a regular file (a terminal, a pipe).
fn protect_stdout() -> std::io::Result<bool> {
    use std::os::fd::AsFd as _;
    let out = std::io::stdout();
    let fd = out.as_fd();
    let st = rustix::fs::fstat(fd)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Ok(false);
    }
    rustix::fs::fchmod(fd, rustix::fs::Mode::from_raw_mode(0o600))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_toml_loads_and_keeps_strange_values() {
        let c = fetchmailrc(
            "poll \"odd host\" proto imap port 993 user 'a\"b' password \"p\\\\w\\\"q\" ssl folder \"INBOX\" 'x y'",
        )
        .unwrap();
        let t = render(&c, "rc");
        check(&t).unwrap();
        let raw = crate::config::parse(&t, Path::new("t")).unwrap();
        let a = &raw.account["odd host"];
        assert_eq!(a.user.as_deref(), Some("a\"b"));
        assert_eq!(a.password.as_deref(), Some("p\\w\"q"));
        assert_eq!(a.folders.as_deref(), Some(&["INBOX".to_string(), "x y".to_string()][..]));
    }
}
