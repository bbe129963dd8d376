//! `sshmail tunnel ACCOUNT`: the account's server on stdin/stdout, for
//! clients that run a command to connect (mutt's `tunnel`, mbsync's
//! `Tunnel`, Alpine's `ssh-path`).
//!
//! When a daemon runs for the config, it is asked over its control socket
//! for a stream on the SSH connection it holds: no new handshake, and the
//! greeting comes within milliseconds. Without one (or when it does not
//! run this account), the tunnel connects by itself, never prompting
//! (stdin/stdout belong to the client). Either way the greeting is checked
//! first, and a failure is said on stderr and to the client, in its
//! protocol, before the tunnel exits non-zero.

use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;

use crate::config::{self, Service};
use crate::control::{self, Command, NoAnswer, Response, Why};
use crate::error::Exit;
use crate::gateway::{self, Connected, Served};
use crate::ssh::SshPool;

/// How long the daemon may take to open the stream (its connect timeout
/// is the account's; this bounds a daemon that hangs).
const DAEMON_WAIT: Duration = Duration::from_secs(120);

/// Runs the tunnel until the session ends; returns the exit code.
pub async fn run(config_file: Option<&Path>, account: &str, service: Option<Service>) -> Exit {
    let stdio = stdio();
    let (path, default) = config::config_path(config_file);
    let paths = control::Paths::for_config(&path, default);
    let ask = Command::Tunnel { account: account.to_string(), service };
    match control::exchange(&paths, ask, DAEMON_WAIT).await {
        Ok((Response::Done, daemon)) => {
            let through = Connected {
                stream: Box::new(daemon),
                greeting: Vec::new(),
                connection: None,
                service: service.unwrap_or(Service::Imap),
            };
            if let Err(e) = gateway::splice(stdio, through, false).await {
                tracing::debug!("{account}: the tunnel ended: {e}");
            }
            return Exit::Delivered;
        }
        Ok((Response::Refused(r), _)) if r.why == Why::NoAccount => {
            tracing::debug!("{account}: the daemon does not run it; connecting alone");
        }
        Ok((Response::Refused(r), _)) => {
            return refuse(stdio, service.unwrap_or(Service::Imap), account, &r.text, r.exit()).await;
        }
        Ok((other, _)) => {
            let why = format!("the daemon answered what was not asked: {other:?}");
            return refuse(stdio, service.unwrap_or(Service::Imap), account, &why, Exit::Connect).await;
        }
        Err(NoAnswer::Unsafe(why)) => {
            return refuse(stdio, service.unwrap_or(Service::Imap), account, &why, Exit::Permissions).await;
        }
        // Another config's daemon runs: worth a word, the user may have
        // meant that one.
        Err(NoAnswer::NotRunning(why, others)) if !others.is_empty() => tracing::warn!("{why}; connecting alone"),
        Err(NoAnswer::NotRunning(..)) => {}
        Err(NoAnswer::Failed(why)) => tracing::info!("{why}; connecting alone"),
    }
    let (served, pool) = match alone(&path, account, service) {
        Ok(s) => s,
        Err(e) => return refuse(stdio, service.unwrap_or(Service::Imap), account, &e.to_string(), e.exit()).await,
    };
    let result = match gateway::connect(&served, &pool).await {
        Err(e) => refuse(stdio, served.service, account, &e.to_string(), e.exit()).await,
        Ok(server) => {
            if let Err(e) = gateway::splice(stdio, server, false).await {
                tracing::debug!("{account}: the tunnel ended: {e}");
            }
            Exit::Delivered
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), pool.close_all()).await;
    result
}

/// Standard input and output as one stream. A socket (mbsync's Tunnel
/// gives a socket pair) or a pipe (mutt's tunnel) is polled by the runtime
/// like any connection; anything else (a terminal, a file) goes through
/// tokio's threaded stdio.
fn stdio() -> impl crate::wire::Stream {
    use std::os::fd::AsFd as _;
    type Reader = Box<dyn tokio::io::AsyncRead + Send + Unpin>;
    type Writer = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;
    let kind = |fd: std::os::fd::BorrowedFd<'_>| {
        rustix::fs::fstat(fd).map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode)).ok()
    };
    let socket = |fd: std::os::fd::OwnedFd| -> std::io::Result<tokio::net::UnixStream> {
        let s = std::os::unix::net::UnixStream::from(fd);
        s.set_nonblocking(true)?;
        tokio::net::UnixStream::from_std(s)
    };
    // A dup of the descriptor, and what it is.
    let probe = |fd: std::os::fd::BorrowedFd<'_>| {
        let owned = fd.try_clone_to_owned().ok()?;
        let kind = kind(owned.as_fd())?;
        Some((owned, kind))
    };
    use rustix::fs::FileType;
    let input: Reader = match probe(std::io::stdin().as_fd()) {
        Some((fd, FileType::Socket)) => {
            socket(fd).map_or_else(|_| Box::new(tokio::io::stdin()) as Reader, |s| Box::new(s))
        }
        Some((fd, FileType::Fifo)) => tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
            .map_or_else(|_| Box::new(tokio::io::stdin()) as Reader, |p| Box::new(p)),
        _ => Box::new(tokio::io::stdin()),
    };
    let output: Writer = match probe(std::io::stdout().as_fd()) {
        Some((fd, FileType::Socket)) => {
            socket(fd).map_or_else(|_| Box::new(tokio::io::stdout()) as Writer, |s| Box::new(s))
        }
        Some((fd, FileType::Fifo)) => tokio::net::unix::pipe::Sender::from_owned_fd(fd)
            .map_or_else(|_| Box::new(tokio::io::stdout()) as Writer, |p| Box::new(p)),
        _ => Box::new(tokio::io::stdout()),
    };
    tokio::io::join(input, output)
}

/// What to serve, read from the config file, and a pool of our own.
fn alone(path: &Path, account: &str, service: Option<Service>) -> crate::error::Result<(Served, SshPool)> {
    let config = config::Config::load(Some(path), &config::Overrides::default())?;
    let account = config.account(account)?;
    let service = service.unwrap_or(Service::of(account.protocol));
    Ok((Served::new(account, service)?, SshPool::new()))
}

/// Says why on stderr and to the client; returns `exit`.
async fn refuse<S: tokio::io::AsyncWrite + Unpin>(
    mut stdio: S,
    service: Service,
    account: &str,
    why: &str,
    exit: Exit,
) -> Exit {
    crate::errln!("sshmail: {account}: {why}");
    let _ = stdio.write_all(&gateway::refusal(service, why)).await;
    let _ = stdio.flush().await;
    match exit {
        Exit::Delivered | Exit::NoMail => Exit::Connect,
        other => other,
    }
}
