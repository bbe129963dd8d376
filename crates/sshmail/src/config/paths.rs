//! Where files are: every directory sshmail uses is decided here, from the
//! XDG variables and the home (config, state, outbox, cache, runtime).

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

/// The outbox: `$XDG_DATA_HOME/sshmail/outbox`.
pub fn default_outbox_dir() -> PathBuf {
    xdg_dir("XDG_DATA_HOME", ".local/share").join("sshmail/outbox")
}

/// Where what a channel's peer sends is spilled when its reader lags:
/// `$XDG_CACHE_HOME/sshmail`.
pub fn cache_dir() -> PathBuf {
    xdg_dir("XDG_CACHE_HOME", ".cache").join("sshmail")
}

/// The user's runtime directory: `$XDG_RUNTIME_DIR`, else `/run/user/UID`
/// where that exists.
pub fn runtime_base() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    let run = PathBuf::from(format!("/run/user/{}", rustix::process::geteuid().as_raw()));
    run.is_dir().then_some(run)
}

/// The daemon's control directory: `sshmail` in the runtime directory,
/// else `$TMPDIR/sshmail-UID` (which another user could have made first:
/// its clients check it).
pub fn control_dir() -> PathBuf {
    match runtime_base() {
        Some(base) => base.join("sshmail"),
        None => std::env::temp_dir().join(format!("sshmail-{}", rustix::process::geteuid().as_raw())),
    }
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
