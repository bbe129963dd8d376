//! The gateway: mail clients reach the remote IMAP, POP3 or SMTP server
//! through sshmail's SSH connections.
//!
//! - [`listen`]: local endpoints (`serve.imap` …) that serve only their
//!   owner.
//! - Each client connection is one channel on the pooled SSH connection
//!   ([`transport::open`] with the service's route): a forward, or for an
//!   IMAP account the remote imapd in an exec channel (PREAUTH: no second
//!   password). The connection is shared with the daemon's fetching and
//!   the other clients, and closed by the pool once nobody uses it.
//! - The server's greeting is read and checked before anything reaches
//!   the client ([`connect`]): text before it (a shell startup file, a
//!   forced command) is a clear error, sent to the client in its own
//!   protocol and logged, not a hang.
//! - Then bytes pass through unaltered both ways ([`splice`]), except with
//!   `serve.imap_accept_login`, where [`shim`] greets OK instead of PREAUTH
//!   and answers the client's login itself.
//!
//! `sshmail tunnel` ([`tunnel`]) gets the same stream on
//! stdin/stdout, from the daemon's control socket when a daemon runs, else
//! by connecting itself.

pub mod listen;
mod peer;
mod shim;
pub mod tunnel;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sshmail_proto::imap;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::config::Route;
use crate::config::{Account, Relay, Service, Via};
use crate::error::{Error, Result};
use crate::ssh::SshPool;
use crate::stop::Stop;
use crate::transport;
use crate::wire::Stream;

/// The longest greeting line read before it is judged.
/// How long the server may go on after the client has closed its side.
const AFTER_CLIENT_EOF: Duration = Duration::from_secs(60);
/// The most one direction of a session moves per read.
const COPY_CHUNK: usize = 64 * 1024;

/// What an endpoint (or a tunnel) serves: an account's service, along its
/// route.
#[derive(Debug, Clone)]
pub struct Served {
    /// The account's name.
    pub account: String,
    /// The service.
    pub service: Service,
    /// How to reach it.
    pub route: Route,
    /// IMAP: answer the client's login here ([`shim`]).
    pub accept_login: bool,
}

impl Served {
    /// `service` of `account`: the account's own route for its own
    /// protocol; for another service, a forward through
    /// the same SSH host: SMTP to the account's relay (`send.server`) when
    /// it has one, else to port 25 of the server's host; IMAP and POP3 to
    /// their port on the server's host. What the client says (STARTTLS,
    /// AUTH) passes through untouched.
    pub fn new(account: &Account, service: Service) -> Result<Served> {
        let route = &account.route;
        let route = if Service::of(account.protocol) == service {
            route.clone()
        } else {
            if !matches!(route.via, Via::Forward | Via::Exec(_)) {
                return Err(Error::Config(format!(
                    "account {}: serve.{} needs an SSH route (via = \"forward\" or \"exec\")",
                    account.name,
                    service.name()
                )));
            }
            let relay = account.send.as_ref().and_then(|s| match &s.relay {
                Relay::Smtp(host, port) => Some((host.clone(), *port)),
                Relay::Exec(_) => None,
            });
            let (host, port) = match (service, relay) {
                (Service::Smtp, Some(relay)) => relay,
                (Service::Smtp, None) => (route.server_host.clone(), 25),
                (Service::Imap, _) => (route.server_host.clone(), 143),
                (Service::Pop3, _) => (route.server_host.clone(), 110),
            };
            route.forward_to(&host, port)
        };
        Ok(Served { account: account.name.clone(), service, route, accept_login: account.serve.accept_login })
    }

    /// `account imap`, for logs.
    pub fn name(&self) -> String {
        format!("{} {}", self.account, self.service.name())
    }
}

/// Clients in session now, and since the start (for `status`).
#[derive(Debug, Default)]
pub struct Count {
    now: std::sync::atomic::AtomicU64,
    total: std::sync::atomic::AtomicU64,
}

impl Count {
    /// One more in session, until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> impl Drop + Send + 'static {
        use std::sync::atomic::Ordering::SeqCst;
        self.now.fetch_add(1, SeqCst);
        self.total.fetch_add(1, SeqCst);
        struct Leave(Arc<Count>);
        impl Drop for Leave {
            fn drop(&mut self) {
                self.0.now.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        Leave(self.clone())
    }

    /// (in session now, since the start).
    pub fn get(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::SeqCst;
        (self.now.load(SeqCst), self.total.load(SeqCst))
    }
}

/// A stream to the server whose greeting was read and checked.
pub struct Connected {
    /// The stream, after the greeting.
    pub stream: Box<dyn Stream>,
    /// Everything read so far: the greeting (and anything after it), to be
    /// sent to the client first.
    pub greeting: Vec<u8>,
    /// The SSH connection it runs on, if any (`user@host:port #N`).
    pub connection: Option<String>,
    /// The service.
    pub service: Service,
}

impl Connected {
    /// The server greeted IMAP PREAUTH.
    fn preauth(&self) -> bool {
        self.service == Service::Imap && imap::Greeting::parse(&self.greeting) == imap::Greeting::PreAuth
    }
}

/// Opens a stream to `served` and reads its greeting.
pub async fn connect(served: &Served, pool: &SshPool) -> Result<Connected> {
    let opened = transport::open(&served.route, pool).await?;
    let mut stream = opened.stream;
    let greeting = match opened.greeting {
        // Read already, by the imapd probe or before STARTTLS.
        Some(greeting) => greeting,
        None => match transport::greeting::read(&mut stream, served.service, &served.route, &opened.peer).await {
            Ok(g) => g,
            Err(e) => return Err(crate::process::explain(opened.diagnostics.as_deref(), e).await),
        },
    };
    Ok(Connected { stream, greeting, connection: opened.connection, service: served.service })
}

/// What a client is sent when its server cannot be reached: an error in
/// its own protocol, so that it shows why.
pub fn refusal(service: Service, why: &str) -> Vec<u8> {
    let text = crate::term::one_line(why, 400);
    match service {
        Service::Imap => format!("* BYE [UNAVAILABLE] sshmail: {text}\r\n"),
        Service::Pop3 => format!("-ERR sshmail: {text}\r\n"),
        Service::Smtp => format!("421 sshmail: {text}\r\n"),
    }
    .into_bytes()
}

/// Passes bytes between the client and the server until the session ends:
/// the greeting first (or the login shim), then everything unaltered both
/// ways. When the client closes its side, the server's side is closed too
/// and what it still sends is passed on (for a while); when the server
/// closes, the session ends. Returns the bytes sent each way (to the
/// server, to the client).
pub async fn splice<C: Stream>(client: C, server: Connected, accept_login: bool) -> std::io::Result<(u64, u64)> {
    if accept_login && server.preauth() {
        return shim::run(client, server).await;
    }
    let (mut client_read, mut client_write) = tokio::io::split(client);
    client_write.write_all(&server.greeting).await?;
    let greeting = server.greeting.len() as u64;
    let (server_read, server_write) = tokio::io::split(server.stream);
    pass(&mut client_read, client_write, server_read, server_write, greeting).await
}

/// The two directions of a session, after its start.
async fn pass<R, W, SR, SW>(
    client_read: &mut R,
    mut client_write: W,
    mut server_read: SR,
    mut server_write: SW,
    already_down: u64,
) -> std::io::Result<(u64, u64)>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
    SR: tokio::io::AsyncRead + Unpin,
    SW: tokio::io::AsyncWrite + Unpin,
{
    // What went each way, also when one side stops being waited for.
    let sent_up = AtomicU64::new(0);
    let sent_down = AtomicU64::new(already_down);
    let up = async {
        let r = copy(client_read, &mut server_write, &sent_up).await;
        let _ = server_write.shutdown().await;
        r
    };
    let down = async {
        let r = copy(&mut server_read, &mut client_write, &sent_down).await;
        let _ = client_write.shutdown().await;
        r
    };
    tokio::pin!(up, down);
    tokio::select! {
        // The server ended the session: nothing more can be said to it.
        d = &mut down => d?,
        u = &mut up => {
            u?;
            if let Ok(d) = tokio::time::timeout(AFTER_CLIENT_EOF, down).await {
                d?;
            }
        }
    }
    Ok((sent_up.load(Ordering::Relaxed), sent_down.load(Ordering::Relaxed)))
}

/// Copies until the end of `from`, each piece written out (and flushed)
/// as soon as it is read: no piece waits for the next. Each piece is added
/// to `counted`, which a caller that stops waiting early still reads.
pub(crate) async fn copy<R, W>(from: &mut R, to: &mut W, counted: &AtomicU64) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin + ?Sized,
    W: tokio::io::AsyncWrite + Unpin + ?Sized,
{
    let mut buf = vec![0u8; COPY_CHUNK];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
        counted.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Serves `bound` until `stop`: each client that passes the peer check
/// gets its own stream to the server, a session in `sessions` (which the
/// daemon ends at its stop): clients in session when the endpoint stops (a
/// reload) go on until they end. What it serves is read
/// for each client (a reload may change it).
pub async fn serve(
    bound: listen::Bound,
    served: Arc<std::sync::Mutex<Arc<Served>>>,
    pool: Arc<SshPool>,
    stop: Stop,
    count: Arc<Count>,
    sessions: Arc<crate::stop::Tracked>,
) {
    let at = bound.listen();
    let current = || served.lock().expect("endpoint lock").clone();
    tracing::info!(target: "sshmail::gateway", "{}: serving on {at}", current().name());
    loop {
        tokio::select! {
            accepted = bound.accept() => match accepted {
                Ok(a) => {
                    let inside = count.enter();
                    let (served, pool) = (current(), pool.clone());
                    let session = |end: Stop| async move {
                        tokio::select! {
                            () = client(a, served, pool) => {}
                            () = end.wait() => {}
                        }
                        drop(inside);
                    };
                    // Full: the next accept waits (the listen backlog holds them).
                    tokio::select! {
                        () = sessions.spawn(session) => {}
                        () = stop.wait() => break,
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: a moment, then again.
                    tracing::warn!(target: "sshmail::gateway", "{at}: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            _ = stop.wait() => break,
        }
    }
    drop(bound);
    tracing::info!(target: "sshmail::gateway", "{}: no longer serving on {at}", current().name());
}

/// One client of an endpoint, to its end.
async fn client(accepted: listen::Accepted, served: Arc<Served>, pool: Arc<SshPool>) {
    let listen::Accepted { mut stream, who } = accepted;
    let name = served.name();
    match connect(&served, &pool).await {
        Err(e) => {
            tracing::warn!(target: "sshmail::gateway", "{name}: a client ({who}) came, but the server: {e}");
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                stream.write_all(&refusal(served.service, &e.to_string())),
            )
            .await;
        }
        Ok(server) => {
            let on = server.connection.clone().unwrap_or_else(|| "its own connection".into());
            tracing::info!(target: "sshmail::gateway", "{name}: a client ({who}) connected, on {on}");
            match splice(stream, server, served.accept_login).await {
                Ok((up, down)) => tracing::info!(
                    target: "sshmail::gateway",
                    "{name}: the client ({who}) is done: {up} bytes to the server, {down} to the client"
                ),
                Err(e) => tracing::info!(target: "sshmail::gateway", "{name}: the client ({who}) went away: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(raw: crate::config::RawAccount) -> Account {
        crate::config::resolve("a", &raw, &crate::config::Resolving::default()).unwrap()
    }

    #[test]
    fn another_service_is_a_forward_to_its_port_on_the_server_host_its_own_is_the_account_route() {
        let a = account(crate::config::RawAccount {
            ssh: Some("me@shell".into()),
            protocol: Some("imap".into()),
            ..Default::default()
        });
        let own = Served::new(&a, Service::Imap).unwrap();
        assert_eq!(own.route.via, Via::Exec(None));
        for (service, port) in [(Service::Pop3, 110), (Service::Smtp, 25)] {
            let other = Served::new(&a, service).unwrap();
            assert_eq!((other.route.via.clone(), other.route.server_port), (Via::Forward, port));
            assert_eq!(other.route.server_host, "localhost");
            assert!(!other.route.allow_preauth);
        }
        let a = account(crate::config::RawAccount {
            protocol: Some("imap".into()),
            via: Some("tls".into()),
            server: Some("imap.example.org".into()),
            ..Default::default()
        });
        assert!(Served::new(&a, Service::Smtp).is_err(), "no SSH route to forward through");
    }

    #[test]
    fn a_refusal_is_said_in_the_clients_protocol_on_one_line() {
        assert_eq!(refusal(Service::Imap, "down\r\nA1 OK"), b"* BYE [UNAVAILABLE] sshmail: down  A1 OK\r\n");
        assert!(refusal(Service::Pop3, "x").starts_with(b"-ERR sshmail: x"));
        assert!(refusal(Service::Smtp, "x").starts_with(b"421 sshmail: x"));
    }
}
