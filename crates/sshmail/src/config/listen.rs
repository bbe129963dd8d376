//! `serve.*` values: where a local endpoint listens.

use std::path::PathBuf;

use super::*;
use crate::error::{Error, Result};

/// Parses a `serve.*` value: `unix:PATH` (`$XDG_RUNTIME_DIR` and `~`
/// expanded; absolute) or `tcp:HOST:PORT` (an IP address, or
/// `localhost`). A TCP address other hosts can reach is refused unless
/// `open_to_network`.
pub fn parse_listen(s: &str, key: &str, open_to_network: bool) -> Result<Listen> {
    let bad = |why: &str| Error::Config(format!("{key} = {s:?}: {why}"));
    if let Some(path) = s.strip_prefix("unix:") {
        let path = expand_runtime_dir(path).map_err(|e| bad(&e))?;
        if !path.is_absolute() {
            return Err(bad("the socket path must be absolute"));
        }
        return Ok(Listen::Unix(path));
    }
    let Some(rest) = s.strip_prefix("tcp:") else {
        return Err(bad("expected unix:PATH or tcp:HOST:PORT"));
    };
    let (host, port) = match split_host_port(rest) {
        Some((h, Some(p))) if p != 0 => (h, p),
        _ => return Err(bad("expected tcp:HOST:PORT with a port from 1 to 65535")),
    };
    let ip: std::net::IpAddr = match host.as_str() {
        "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
        h => h.parse().map_err(|_| bad("HOST must be an IP address (127.0.0.1, [::1]) or localhost"))?,
    };
    if !ip.is_loopback() && !open_to_network {
        return Err(bad(
            "this address can be reached from other hosts, where nobody's uid can be checked: anyone reaching it \
             would read your mail. Listen on 127.0.0.1, [::1] or a unix: socket, or, if that is what you want, \
             also set serve.open_to_network = true",
        ));
    }
    Ok(Listen::Tcp(std::net::SocketAddr::new(ip, port)))
}

/// The rest of `path` after a leading `$XDG_RUNTIME_DIR` (or
/// `${XDG_RUNTIME_DIR}`), if it starts so.
pub(super) fn under_runtime_dir(path: &str) -> Option<&str> {
    ["$XDG_RUNTIME_DIR", "${XDG_RUNTIME_DIR}"].iter().find_map(|var| path.strip_prefix(var))
}

/// Expands a leading `$XDG_RUNTIME_DIR` (or `${XDG_RUNTIME_DIR}`) and `~`.
fn expand_runtime_dir(path: &str) -> std::result::Result<PathBuf, String> {
    if let Some(rest) = under_runtime_dir(path) {
        let base = runtime_base().ok_or("XDG_RUNTIME_DIR is not set here (and no /run/user/UID exists)")?;
        return Ok(base.join(rest.trim_start_matches('/')));
    }
    if path.contains('$') {
        return Err("only $XDG_RUNTIME_DIR is expanded in a socket path".into());
    }
    Ok(expand_tilde(path))
}
