//! Configuration, resolved once.
//!
//! [`RawConfig`] is the TOML file as written: every field optional, strings
//! as the user typed them. [`Config::load`] reads it, applies a command's
//! [`Overrides`], reads `~/.ssh/config` and turns each account into an
//! [`Account`] with typed, checked values, every default filled in, and its
//! [`Route`] made. Every command (fetch, daemon, serve, tunnel, sendmail,
//! doctor, import's check of its output) goes through it; nothing outside
//! this module reads raw configuration or ssh_config.
//!
//! ```toml
//! [account.work]
//! ssh = "me@shell.example.org"      # [user@]host[:port], or a ~/.ssh/config Host
//! protocol = "pop3"
//! server = "localhost:110"          # as seen from the SSH host
//! user = "me"
//! password_command = "pass show mail/work"
//! deliver = "maildir:~/Maildir"
//! ```

mod account;
pub mod algorithms;
mod listen;
mod paths;
mod raw;
mod resolve;
mod route;
pub mod ssh;
pub mod ssh_directives;
#[cfg(test)]
mod tests;

pub use account::*;
use listen::under_runtime_dir;
pub use listen::*;
pub use paths::*;
pub use raw::*;
pub use resolve::*;
pub use route::Route;
pub use ssh::{SshTarget, load_ssh_config};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What a command's flags say over the config file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// Account values (the flags of `fetch`), over every account's own.
    pub account: RawAccount,
    /// Another state directory.
    pub state_dir: Option<String>,
    /// Another ssh_config file than `~/.ssh/config`.
    pub ssh_config: Option<PathBuf>,
}

/// A config file, loaded and resolved: what commands read.
#[derive(Debug)]
pub struct Config {
    /// The file.
    pub path: PathBuf,
    /// It is the default file (whose daemon has the plain `control` socket).
    pub default: bool,
    /// The `[daemon]` settings.
    pub settings: DaemonSettings,
    /// Each account resolved, or why it is not (its table, or
    /// `~/.ssh/config` for its host); by name.
    pub accounts: BTreeMap<String, Result<Account>>,
    /// Each account as written: what a daemon compares on a reload.
    pub written: BTreeMap<String, RawAccount>,
    /// Why `~/.ssh/config` (or the file given instead) could not be read,
    /// if so; every account's entry carries it too.
    pub ssh_config_error: Option<Error>,
}

impl Config {
    /// Loads the config file `given` (the default one when None) with
    /// `overrides`. A file that is missing, unreadable, too open with a
    /// password in it or not TOML is an error; so are bad `[daemon]`
    /// settings. An account that does not resolve is an error in its own
    /// entry.
    pub fn load(given: Option<&Path>, overrides: &Overrides) -> Result<Config> {
        let (path, default) = config_path(given);
        if !path.exists() {
            return Err(Error::Config(format!("no config file at {}; write one (see `man sshmail`)", path.display())));
        }
        let raw = load(&path)?;
        Config::resolve(path, default, raw, overrides)
    }

    /// Config text (not read from a file: what `import` writes), resolved
    /// as [`Config::load`] would; `name` names it in errors.
    pub fn parse(text: &str, name: &Path, overrides: &Overrides) -> Result<Config> {
        let raw = parse(text, name)?;
        Config::resolve(name.to_path_buf(), false, raw, overrides)
    }

    fn resolve(path: PathBuf, default: bool, raw: RawConfig, overrides: &Overrides) -> Result<Config> {
        let settings = raw.daemon.resolve()?;
        let ssh_config = load_ssh_config(overrides.ssh_config.as_deref());
        let state_dir = overrides.state_dir.as_deref().or(raw.state_dir.as_deref());
        let accounts = raw
            .account
            .iter()
            .map(|(name, written)| {
                let resolved = ssh_config.as_ref().map_err(Clone::clone).and_then(|ssh_config| {
                    let given = Resolving {
                        state_dir,
                        ssh_config: ssh_config.as_ref(),
                        interval: Some(settings.interval),
                        notify: settings.notify,
                    };
                    resolve(name, &written.over(&overrides.account), &given)
                });
                (name.clone(), resolved)
            })
            .collect();
        let ssh_config_error = ssh_config.err();
        Ok(Config { path, default, settings, accounts, written: raw.account, ssh_config_error })
    }

    /// The account `name`, or why there is none.
    pub fn account(&self, name: &str) -> Result<&Account> {
        match self.accounts.get(name) {
            None => Err(Error::Config(format!("no account {name:?} in {}", self.path.display()))),
            Some(Err(e)) => Err(e.clone()),
            Some(Ok(a)) => Ok(a),
        }
    }

    /// The accounts that can send (those with a `send` table); one of
    /// them that does not resolve is an error.
    pub fn senders(&self) -> Result<Vec<Account>> {
        let mut out = Vec::new();
        for (name, written) in &self.written {
            if written.send.is_some() {
                out.push(self.account(name)?.clone());
            }
        }
        Ok(out)
    }

    /// One account made of the command line alone (`fetch --ssh HOST`,
    /// `--tunnel CMD`, `--via tls`), named for messages by what it reaches;
    /// its ledger is named after the mailbox itself.
    pub fn adhoc(overrides: &Overrides) -> Result<Account> {
        let ssh_config = load_ssh_config(overrides.ssh_config.as_deref())?;
        let given = Resolving {
            state_dir: overrides.state_dir.as_deref(),
            ssh_config: ssh_config.as_ref(),
            interval: None,
            notify: false,
        };
        let mut account = resolve("adhoc", &overrides.account, &given)?;
        account.adhoc = true;
        let dest = overrides.account.ssh.as_deref().unwrap_or_default();
        account.name = match &account.route.via {
            Via::Forward => format!("{} via {dest}", account.address()),
            Via::Exec(_) => format!("imap on {dest}"),
            Via::Command(c) => format!("tunnel (`{}` …)", c.program()),
            Via::Tls | Via::StartTls => account.address(),
        };
        Ok(account)
    }
}
