//! Local endpoints that serve only their owner.
//!
//! - A Unix socket is made mode 0600, in a directory sshmail creates mode
//!   0700 when it is missing; a stale socket left by a process that died
//!   is replaced, a live one (another daemon's) is not.
//! - A TCP endpoint listens where the config says; a non-loopback address
//!   is refused by the config unless `serve.open_to_network`.
//! - Every connection's peer is checked: SO_PEERCRED on a Unix socket, the
//!   owner of the peer's socket in `/proc/net/tcp*` on loopback TCP
//!   ([`super::peer`]). Another uid is refused and logged.
//! - A privileged port without the right to bind it fails with the two
//!   ways to give that right, not a bare EACCES.

use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use crate::config::Listen;
use crate::error::{Error, Result};
use crate::logging::Throttle;
use crate::wire::Stream;

/// A bound endpoint. Dropping it removes its socket file (if it is still
/// the one it made).
pub struct Bound {
    listen: Listen,
    kind: Kind,
    /// Refused connections, logged a few at a time.
    refusals: Throttle,
}

enum Kind {
    Unix { listener: tokio::net::UnixListener, path: PathBuf, inode: (u64, u64) },
    Tcp(tokio::net::TcpListener),
}

/// An accepted connection whose peer is the owner.
pub struct Accepted {
    /// The connection.
    pub stream: Box<dyn Stream>,
    /// Who connected, for logs (`uid 1000 pid 4242`, `127.0.0.1:40000`).
    pub who: String,
}

impl Bound {
    /// Listens on `listen` (blocking calls; done once per endpoint).
    pub fn bind(listen: &Listen) -> Result<Bound> {
        let kind = match listen {
            Listen::Unix(path) => bind_unix(path)?,
            Listen::Tcp(addr) => {
                let std = std::net::TcpListener::bind(addr).map_err(|e| bind_error(listen, addr.port(), e))?;
                std.set_nonblocking(true).map_err(|e| Error::Config(format!("{listen}: {e}")))?;
                Kind::Tcp(tokio::net::TcpListener::from_std(std).map_err(|e| Error::Config(format!("{listen}: {e}")))?)
            }
        };
        Ok(Bound { listen: listen.clone(), kind, refusals: Throttle::new() })
    }

    /// Where it listens (a TCP port 0 resolved).
    pub fn listen(&self) -> Listen {
        match &self.kind {
            Kind::Tcp(l) => l.local_addr().map(Listen::Tcp).unwrap_or_else(|_| self.listen.clone()),
            Kind::Unix { .. } => self.listen.clone(),
        }
    }

    /// The next connection from the owner; connections from anyone else
    /// are refused (closed) and logged on the way.
    pub async fn accept(&self) -> std::io::Result<Accepted> {
        let me = rustix::process::geteuid().as_raw();
        loop {
            let (stream, who, uid): (Box<dyn Stream>, String, std::result::Result<u32, String>) = match &self.kind {
                Kind::Unix { listener, .. } => {
                    let (s, _) = listener.accept().await?;
                    let cred = s.peer_cred();
                    let (who, uid) = match cred {
                        Ok(c) => (
                            format!("uid {} pid {}", c.uid(), c.pid().map(|p| p.to_string()).unwrap_or("?".into())),
                            Ok(c.uid()),
                        ),
                        Err(e) => ("an unknown peer".to_string(), Err(format!("no peer credentials: {e}"))),
                    };
                    (Box::new(s), who, uid)
                }
                Kind::Tcp(listener) => {
                    let (s, peer) = listener.accept().await?;
                    let uid = match s.local_addr() {
                        Ok(local) if peer.ip().is_loopback() || local.ip() == peer.ip() => {
                            match super::peer::tcp_peer_uid(local, peer) {
                                Ok(Some(uid)) => Ok(uid),
                                Ok(None) => Err("its socket is not listed in /proc/net/tcp".to_string()),
                                Err(e) => Err(format!("cannot read /proc/net/tcp: {e}")),
                            }
                        }
                        // Another host (only with serve.open_to_network).
                        Ok(_) => Ok(me),
                        Err(e) => Err(e.to_string()),
                    };
                    let who = match &uid {
                        Ok(u) => format!("{peer} (uid {u})"),
                        Err(_) => peer.to_string(),
                    };
                    let _ = s.set_nodelay(true);
                    (Box::new(s), who, uid)
                }
            };
            match (uid, self.refusals.allow()) {
                (Ok(uid), _) if uid == me => return Ok(Accepted { stream, who }),
                (_, None) => {}
                (Ok(uid), Some(held)) => tracing::warn!(
                    target: "sshmail::gateway",
                    "{}: refused a connection from {who}: only uid {me} may use it (uid {uid} is someone else){}",
                    self.listen,
                    Throttle::more(held)
                ),
                (Err(why), Some(held)) => tracing::warn!(
                    target: "sshmail::gateway",
                    "{}: refused a connection from {who}: cannot tell whose it is ({why}){}",
                    self.listen,
                    Throttle::more(held)
                ),
            }
            drop(stream);
        }
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        if let Kind::Unix { path, inode, .. } = &self.kind
            && std::fs::symlink_metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == *inode)
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds a Unix socket at `path`: its directory made 0700 if missing, a
/// stale socket replaced, the socket made 0600.
fn bind_unix(path: &Path) -> Result<Kind> {
    let at = |what: String| Error::Config(format!("unix:{}: {what}", path.display()));
    let dir = path.parent().ok_or_else(|| at("no directory".into()))?;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| at(format!("cannot create {}: {e}", dir.display())))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            // A live socket answers; a stale one (its process died) does not.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(at("another process serves this socket already (another sshmail daemon or serve?)".into()));
            }
            std::fs::remove_file(path).map_err(|e| at(format!("cannot remove the stale socket: {e}")))?;
        }
        Ok(_) => return Err(at("a file that is not a socket is in the way; remove it or choose another path".into())),
        Err(_) => {}
    }
    let std = std::os::unix::net::UnixListener::bind(path).map_err(|e| at(format!("cannot listen: {e}")))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| at(format!("cannot make it private (chmod 600): {e}")))?;
    let meta = std::fs::symlink_metadata(path).map_err(|e| at(e.to_string()))?;
    let dir_mode = std::fs::metadata(dir).map(|m| m.mode() & 0o777).unwrap_or(0);
    if dir_mode & 0o077 != 0 {
        tracing::info!(
            target: "sshmail::gateway",
            "unix:{}: its directory is mode {dir_mode:03o}; the socket itself is 0600 and every peer's uid is checked",
            path.display()
        );
    }
    std.set_nonblocking(true).map_err(|e| at(e.to_string()))?;
    let listener = tokio::net::UnixListener::from_std(std).map_err(|e| at(e.to_string()))?;
    Ok(Kind::Unix { listener, path: path.to_path_buf(), inode: (meta.dev(), meta.ino()) })
}

/// A bind error, with advice for a privileged port.
fn bind_error(listen: &Listen, port: u16, e: std::io::Error) -> Error {
    let advice = match e.kind() {
        std::io::ErrorKind::PermissionDenied if port < 1024 => format!(
            ": port {port} is privileged. Either let sshmail bind low ports \
             (sudo setcap cap_net_bind_service=+ep \"$(command -v sshmail)\"), or let every program do so \
             (sudo sysctl net.ipv4.ip_unprivileged_port_start={port}), or serve a port above 1023 and point \
             the client there"
        ),
        std::io::ErrorKind::AddrInUse => {
            ": something listens there already (another sshmail daemon or serve? `ss -ltnp` shows who)".to_string()
        }
        _ => String::new(),
    };
    Error::Config(format!("{listen}: cannot listen: {e}{advice}"))
}
