//! Where files are by default: the XDG directories and the home.

use std::path::{Path, PathBuf};

/// The default config file: `$XDG_CONFIG_HOME/sshmail/config.toml`.
pub fn default_config_path() -> PathBuf {
    xdg_dir("XDG_CONFIG_HOME", ".config").join("sshmail/config.toml")
}

/// The config file a command runs: the given one, or the default; and
/// whether it is the default file (however it is named), whose daemon
/// has the plain `control` socket.
pub fn config_path(given: Option<&Path>) -> (PathBuf, bool) {
    let default = default_config_path();
    match given {
        None => (default, true),
        Some(p) => {
            let same = match (std::fs::canonicalize(p), std::fs::canonicalize(&default)) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            };
            (p.to_path_buf(), same)
        }
    }
}

/// The default state directory: `$XDG_STATE_HOME/sshmail`.
pub fn default_state_dir() -> PathBuf {
    xdg_dir("XDG_STATE_HOME", ".local/state").join("sshmail")
}

fn xdg_dir(var: &str, fallback: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => home().join(fallback),
    }
}

/// The user's home directory.
pub fn home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"))
}

/// Expands a leading `~/`.
pub fn expand_tilde(s: &str) -> PathBuf {
    match s.strip_prefix("~/") {
        Some(rest) => home().join(rest),
        None if s == "~" => home(),
        None => PathBuf::from(s),
    }
}
