//! One authenticated SSH connection, made in-process with russh.
//!
//! [`SshSession::connect`] does TCP (or a ProxyJump channel), key exchange,
//! host key verification against our own known_hosts matcher, and the auth
//! chain: agent keys, then identity files, then a password only if the
//! account gives one. Channels come out as byte streams.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::PublicKey;

use super::auth::Prompts;
use super::known_hosts::{self, Verdict};
use super::lease::{Lease, Usage};
use crate::config::HostKeyPolicy;
use crate::config::SshTarget;
use crate::error::{Error, HostKeyProblem, HostKeyRefused, Result};

/// An open channel as a byte stream, counted as a use of its connection
/// while it is open; what the peer sends waits in a bounded
/// [`super::backlog::Backlog`], never on the connection.
pub type Channel = tokio::io::DuplexStream;

/// russh's callback object: verifies the host key.
struct Handler {
    target: SshTarget,
    /// The known_hosts files' contents, or why they could not be read.
    known: std::result::Result<Vec<(std::path::PathBuf, String)>, String>,
    /// The host key check's outcome: what trusted the key (its
    /// fingerprint and where), or why it was refused.
    verdict: Arc<Mutex<Option<std::result::Result<Trust, HostKeyProblem>>>>,
    /// The algorithms the key exchange settled on, for doctor.
    negotiated: Arc<Mutex<String>>,
    /// The host keys the server announced after the login
    /// (`hostkeys-00@openssh.com`), for UpdateHostKeys to learn.
    announced: Arc<Announced>,
}

/// What trusted a host key: shown as its fingerprint and known_hosts line,
/// or as its certificate and CA.
#[derive(Debug, Default)]
struct Trust {
    shown: String,
    certificate: bool,
}

impl Trust {
    fn key(shown: String) -> Trust {
        Trust { shown, certificate: false }
    }
}

/// Host keys a server announced, and a wake for whoever learns them.
#[derive(Default)]
struct Announced {
    keys: Mutex<Option<Vec<PublicKey>>>,
    ready: tokio::sync::Notify,
    /// Set once the announcement came (a closing connection then waits
    /// for the proof; without one, nothing is waited for).
    arrived: std::sync::atomic::AtomicBool,
}

/// What the handshake showed, for `sshmail doctor`.
#[derive(Debug, Clone, Default)]
pub struct Handshake {
    /// The host key's fingerprint and the known_hosts line that trusts it.
    pub host_key: String,
    /// The host key was a certificate (checked against a CA).
    pub certified: bool,
    /// What authenticated us: `agent key SHA256:…`, a key file, `password`.
    pub auth: String,
    /// A person's answer was part of the login: another connection would
    /// need them again.
    pub by_person: bool,
    /// The key exchange, host key, cipher and MAC negotiated.
    pub algorithms: String,
}

impl client::Handler for Handler {
    type Error = russh::Error;

    async fn openssh_ext_host_keys_announced(
        &mut self,
        keys: Vec<PublicKey>,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        // Proved and learned by `SshSession::learn_host_keys`, outside
        // this callback (the proof needs the connection's loop).
        *self.announced.keys.lock().expect("announced lock") = Some(keys);
        self.announced.arrived.store(true, std::sync::atomic::Ordering::SeqCst);
        self.announced.ready.notify_one();
        Ok(())
    }

    async fn kex_done(
        &mut self,
        _secret: Option<&[u8]>,
        names: &russh::Names,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let cipher = names.cipher.as_ref();
        // AES-GCM and chacha20-poly1305 authenticate by themselves.
        let mac = if cipher.contains("gcm") || cipher.contains("poly1305") {
            String::new()
        } else {
            format!(", MAC {}", names.client_mac.as_ref())
        };
        *self.negotiated.lock().expect("negotiated lock") =
            format!("key exchange {}, host key {}, cipher {cipher}{mac}", names.kex.as_ref(), names.key.as_str());
        Ok(())
    }

    async fn check_server_key(&mut self, key: &russh::keys::PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let t = &self.target;
        let (host, port) = t.known_as();
        let key: &PublicKey = match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => key,
            // Asked for only when an @cert-authority line names the host.
            russh::keys::PublicKeyOrCertificate::Certificate(cert) => return Ok(self.check_certificate(cert)),
        };
        let verdict = self.known.as_ref().map(|texts| known_hosts::check_texts(texts, host, port, key));
        let line = || format!("{} {}", known_hosts::lookup_name(host, port), key.to_openssh().unwrap_or_default());
        let refusal = match verdict {
            Ok(Verdict::Trusted(at)) => {
                tracing::debug!("host key for {} matches {at}", known_hosts::lookup_name(host, port));
                *self.verdict.lock().expect("verdict lock") =
                    Some(Ok(Trust::key(format!("{} ({at})", known_hosts::fingerprint(key)))));
                return Ok(true);
            }
            Ok(Verdict::Unknown) if t.policy == HostKeyPolicy::AcceptNew => {
                let file = &t.known_hosts[0];
                match known_hosts::append_hashed(file, host, port, key) {
                    Ok(()) => {
                        *self.verdict.lock().expect("verdict lock") = Some(Ok(Trust::key(format!(
                            "{} (added to {})",
                            known_hosts::fingerprint(key),
                            file.display()
                        ))));
                        tracing::warn!(
                            "added host key {} for {} to {}",
                            known_hosts::fingerprint(key),
                            known_hosts::lookup_name(host, port),
                            file.display()
                        );
                        return Ok(true);
                    }
                    Err(e) => {
                        HostKeyProblem::Unusable(format!("cannot record the new host key in {}: {e}", file.display()))
                    }
                }
            }
            Ok(Verdict::Unknown) => HostKeyProblem::Unknown { offered: known_hosts::fingerprint(key), line: line() },
            Ok(Verdict::Changed { at, known }) => HostKeyProblem::Changed {
                at: at.to_string(),
                known,
                offered: known_hosts::fingerprint(key),
                line: line(),
            },
            Ok(Verdict::Revoked(at)) => {
                HostKeyProblem::Revoked { at: at.to_string(), fingerprint: known_hosts::fingerprint(key) }
            }
            Err(e) => HostKeyProblem::Unusable(format!("cannot read known_hosts: {e}")),
        };
        *self.verdict.lock().expect("verdict lock") = Some(Err(refusal));
        Ok(false)
    }
}

impl Handler {
    /// A host certificate against known_hosts' `@cert-authority` lines.
    fn check_certificate(&self, cert: &russh::keys::Certificate) -> bool {
        let (host, port) = self.target.known_as();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let verdict = self.known.as_ref().map(|texts| known_hosts::check_certificate(texts, host, port, cert, now));
        let outcome = match verdict {
            Ok(known_hosts::CertVerdict::Trusted(at)) => {
                let ca = known_hosts::fingerprint(&PublicKey::new(cert.signature_key().clone(), ""));
                Ok(Trust {
                    shown: format!(
                        "certificate \"{}\" signed by CA {ca} ({at})",
                        crate::term::one_line(cert.key_id(), 80)
                    ),
                    certificate: true,
                })
            }
            Ok(known_hosts::CertVerdict::Revoked(at)) => Err(HostKeyProblem::Revoked {
                at: at.to_string(),
                fingerprint: known_hosts::fingerprint(&PublicKey::new(cert.public_key().clone(), "")),
            }),
            Ok(known_hosts::CertVerdict::NoAuthority) => Err(HostKeyProblem::Certificate(
                "the server showed a host certificate, and no @cert-authority line names this host".into(),
            )),
            Ok(known_hosts::CertVerdict::Refused(why)) => Err(HostKeyProblem::Certificate(why)),
            Err(e) => Err(HostKeyProblem::Unusable(format!("cannot read known_hosts: {e}"))),
        };
        let trusted = outcome.is_ok();
        *self.verdict.lock().expect("verdict lock") = Some(outcome);
        trusted
    }
}

/// An authenticated SSH connection.
pub struct SshSession {
    handle: client::Handle<Handler>,
    target: SshTarget,
    /// Kept alive so the jump host's channel lives as long as we do.
    jump: Option<Arc<SshSession>>,
    usage: Arc<Usage>,
    /// This connection's number in the process (1, 2, …), to tell apart
    /// connections to one host in logs and status.
    serial: u64,
    handshake: Handshake,
    /// The announced host keys, and the task that learns them (awaited,
    /// bounded, when the connection closes).
    announced: Arc<Announced>,
    learning: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// What the ProxyCommand carrying this connection says, and its exit.
    proxy: Option<Arc<crate::process::Collected>>,
}

impl std::fmt::Debug for SshSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SshSession({})", self.target.name())
    }
}

impl SshSession {
    /// Connects and authenticates. `jump` is an already connected session
    /// through which to reach the target (ProxyJump).
    pub async fn connect(target: &SshTarget, jump: Option<Arc<SshSession>>, prompts: &Prompts) -> Result<SshSession> {
        let where_ = target.name();
        let verdict = Arc::new(Mutex::new(None));
        // known_hosts is read once: it orders the host key algorithms asked
        // for, then checks the key the server shows.
        let known = known_hosts::read(&target.known_hosts);
        if let Err(e) = &known
            && crate::error::out_of_descriptors(e)
        {
            // Temporary: a later try finds descriptors free again.
            return Err(Error::Connect(format!("{where_}: cannot read known_hosts: {e}")));
        }
        let known = known.map_err(|e| e.to_string());
        let (known_host, known_port) = target.known_as();
        let types = known.as_deref().map(|t| known_hosts::known_types(t, known_host, known_port)).unwrap_or_default();
        let authority = known.as_deref().is_ok_and(|t| known_hosts::has_authority(t, known_host, known_port));
        let config = Arc::new(client_config(target, &types, authority));
        let negotiated = Arc::new(Mutex::new(String::new()));
        let announced = Arc::new(Announced::default());
        let handler = Handler {
            target: target.clone(),
            known,
            verdict: verdict.clone(),
            negotiated: negotiated.clone(),
            announced: announced.clone(),
        };
        let timeout = target.timeout;
        // What a ProxyCommand says, for the error when the connection fails.
        let mut proxy_said = None;
        let connecting = async {
            match (&jump, &target.proxy_command) {
                (Some(j), _) => {
                    let ch = j.forward(&target.host, target.port).await?;
                    Ok(client::connect_stream(config, ch, handler).await)
                }
                (None, Some(command)) => {
                    let shell = crate::config::Command::Shell(command.clone());
                    let (stream, said, _) = crate::process::spawn_stream(&shell, "ProxyCommand")?;
                    said.mark_proxy();
                    proxy_said = Some(said);
                    Ok(client::connect_stream(config, stream, handler).await)
                }
                (None, None) => {
                    let tcp = crate::wire::connect_tcp(&target.host, target.port, target.connect_timeout)
                        .await
                        .map_err(|e| Error::Connect(format!("{where_}: cannot connect: {e}")))?;
                    let tcp = crate::wire::QuickAck(tcp);
                    Ok(client::connect_stream(config, tcp, handler).await)
                }
            }
        };
        let res = tokio::time::timeout(timeout * 2, connecting)
            .await
            .map_err(|_| Error::Connect(format!("{where_}: SSH handshake timed out")));
        // A failure through a ProxyCommand comes with what the command said.
        let with_proxy = |e: Error| async {
            match &proxy_said {
                Some(said) => {
                    let e = Error::Connect(format!("{where_} through its ProxyCommand: {e}"));
                    crate::process::explain(Some(said.as_ref()), e).await
                }
                None => e,
            }
        };
        let res = match res.and_then(|r| r) {
            Ok(r) => r,
            Err(e) => return Err(with_proxy(e).await),
        };
        let mut handle = match res {
            Ok(h) => h,
            Err(e) => {
                let refused = verdict.lock().expect("verdict lock").take();
                return Err(match refused {
                    Some(Err(r)) => host_key_error(target, r),
                    Some(Ok(_)) | None => {
                        let text = match &e {
                            russh::Error::NoCommonAlgo { kind, ours, theirs } => no_common(&where_, kind, ours, theirs),
                            e => format!("{where_}: SSH connection failed: {e}"),
                        };
                        with_proxy(Error::Connect(text)).await
                    }
                });
            }
        };
        let auth = super::auth::authenticate(&mut handle, target, prompts).await?;
        let trust = verdict.lock().expect("verdict lock").take().and_then(Result::ok).unwrap_or_default();
        let algorithms = std::mem::take(&mut *negotiated.lock().expect("negotiated lock"));
        let handshake = Handshake {
            host_key: trust.shown,
            certified: trust.certificate,
            auth: auth.how,
            by_person: auth.by_person,
            algorithms,
        };
        tracing::info!("SSH connected to {where_}{}", if target.compress { " (compression requested)" } else { "" });
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(SshSession {
            handle,
            target: target.clone(),
            jump,
            usage: Arc::default(),
            serial,
            handshake,
            announced,
            learning: Mutex::new(None),
            proxy: proxy_said,
        })
    }

    /// UpdateHostKeys: once the server announces its host keys (OpenSSH
    /// does right after the login), those known_hosts does not list yet
    /// for this host are proved by the server (`hostkeys-prove-00`) and
    /// added, hashed, to the first known_hosts file. Only for a host
    /// trusted by a plain host key (not a certificate), and never a key of
    /// a type known_hosts already lists for the host. Runs aside; a
    /// connection that closes waits for it a moment.
    pub fn learn_host_keys(self: &Arc<Self>) {
        let t = &self.target;
        if !t.update_host_keys || self.handshake.certified {
            return;
        }
        let weak = Arc::downgrade(self);
        let announced = self.announced.clone();
        let target = t.clone();
        let task = tokio::spawn(async move {
            if tokio::time::timeout(LEARN_WAIT, announced.ready.notified()).await.is_err() {
                return;
            }
            let Some(keys) = announced.keys.lock().expect("announced lock").take() else { return };
            let (host, port) = target.known_as();
            let Ok(texts) = known_hosts::read(&target.known_hosts) else { return };
            let types = known_hosts::known_types(&texts, host, port);
            let new: Vec<PublicKey> = keys
                .into_iter()
                .filter(|k| {
                    known_hosts::check_texts(&texts, host, port, k) == Verdict::Unknown
                        && !types.iter().any(|t| t == k.algorithm().as_str())
                })
                .collect();
            if new.is_empty() {
                return;
            }
            let Some(session) = weak.upgrade() else { return };
            let proved = tokio::time::timeout(target.timeout, session.handle.hostkeys_prove(new.clone())).await;
            drop(session);
            if !matches!(proved, Ok(Ok(()))) {
                tracing::debug!("{}: the server did not prove its other host keys: {proved:?}", target.name());
                return;
            }
            let file = &target.known_hosts[0];
            for key in &new {
                if let Err(e) = known_hosts::append_hashed(file, host, port, key) {
                    tracing::warn!("cannot record a host key of {} in {}: {e}", target.name(), file.display());
                    return;
                }
            }
            tracing::info!(
                "learned {} more host key(s) of {} into {} (UpdateHostKeys): {}",
                new.len(),
                known_hosts::lookup_name(host, port),
                file.display(),
                new.iter().map(known_hosts::fingerprint).collect::<Vec<_>>().join(", ")
            );
        });
        *self.learning.lock().expect("learning lock") = Some(task);
    }

    /// The ProxyCommand under this connection (or under its first
    /// ProxyJump hop): what it said and how it ended.
    pub fn proxy(&self) -> Option<Arc<crate::process::Collected>> {
        self.proxy.clone().or_else(|| self.jump.as_ref().and_then(|j| j.proxy()))
    }

    /// What the handshake showed.
    pub fn handshake(&self) -> &Handshake {
        &self.handshake
    }

    /// What is open on this connection.
    pub fn usage(&self) -> &Arc<Usage> {
        &self.usage
    }

    /// Opens a direct-tcpip channel to `host:port` as seen from the SSH host.
    pub async fn forward(&self, host: &str, port: u16) -> Result<Channel> {
        let lease = self.usage.open();
        let open = self.handle.channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0);
        let ch = tokio::time::timeout(self.target.timeout, open)
            .await
            .map_err(|_| Error::Connect(format!("{}: opening a channel to {host}:{port} timed out", self.name())))?
            .map_err(|e| match e {
                russh::Error::ChannelOpenFailure(reason) => Error::Connect(format!(
                    "the SSH server {} refused the forward to {host}:{port} ({reason:?}); \
                     is AllowTcpForwarding off on that server, or nothing listening on {host}:{port} there?",
                    self.name()
                )),
                other => Error::Connect(format!("{}: cannot open a channel to {host}:{port}: {other}", self.name())),
            })?;
        Ok(super::backlog::attach(ch, lease, |_| {}))
    }

    /// Runs `command` on the SSH host in an exec channel, in the session
    /// slot `lease` reserved ([`Usage::reserve_session`]), and returns its
    /// stdin/stdout as a byte stream. Its stderr (the first 64 KiB) and exit
    /// status are collected in the returned [`ExecStatus`] for error
    /// messages. When the server refuses the channel while others are open,
    /// that many is taken as its limit, and the error says so
    /// ([`ExecError::Full`]): the caller may try another connection.
    pub async fn exec(
        &self,
        command: &str,
        lease: Lease,
    ) -> std::result::Result<(Channel, Arc<ExecStatus>), ExecError> {
        let where_ = self.name();
        let timeout = self.target.timeout;
        let open = async {
            let ch = self.handle.channel_open_session().await?;
            ch.exec(true, command.as_bytes()).await?;
            Ok::<_, russh::Error>(ch)
        };
        let ch = match tokio::time::timeout(timeout, open).await {
            Err(_) => {
                return Err(ExecError::Other(Error::Connect(format!("{where_}: starting `{command}` timed out"))));
            }
            Ok(Err(russh::Error::ChannelOpenFailure(reason))) if self.usage.sessions() > 1 => {
                let others = self.usage.sessions() - 1;
                self.usage.learn_session_limit(others);
                tracing::info!(
                    "{where_} refused session channel number {} ({reason:?}): taking {others} as its MaxSessions",
                    others + 1
                );
                return Err(ExecError::Full);
            }
            // A server that gives one session channel per connection
            // (tinysshd) refuses the next, or hangs up once the first has
            // closed: this connection takes no more; another is opened.
            Ok(Err(e @ (russh::Error::ChannelOpenFailure(_) | russh::Error::Disconnect)))
                if self.usage.sessions_opened() > 0 =>
            {
                self.usage.learn_session_limit(0);
                tracing::info!(
                    "{where_} gave no session channel after {} ({e}): taking it as a server that gives one per \
                     connection",
                    self.usage.sessions_opened()
                );
                return Err(ExecError::Full);
            }
            Ok(Err(e)) => {
                return Err(ExecError::Other(Error::Connect(format!("{where_}: cannot run `{command}`: {e}"))));
            }
            Ok(Ok(ch)) => {
                self.usage.session_opened();
                ch
            }
        };
        let status = Arc::new(ExecStatus::default());
        if let Some(proxy) = self.proxy() {
            status.run_under(proxy);
        }
        let st = status.clone();
        let ours = super::backlog::attach(ch, lease, move |msg| match msg {
            russh::ChannelMsg::ExtendedData { data, ext: 1 } => st.add_stderr(&data),
            russh::ChannelMsg::ExitStatus { exit_status } => st.set_exit(i64::from(exit_status)),
            _ => {}
        });
        Ok((ours, status))
    }

    /// The per-wait timeout of this connection's account.
    pub fn timeout(&self) -> Duration {
        self.target.timeout
    }

    /// True once the connection has gone away.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// `user@host:port`, followed by ` via ...` for each ProxyJump hop: what
    /// tells two connections apart in the pool.
    pub fn route(&self) -> String {
        match &self.jump {
            Some(j) => format!("{} via {}", self.name(), j.route()),
            None => self.name(),
        }
    }

    /// `user@host:port`, for messages.
    pub fn name(&self) -> String {
        self.target.name()
    }

    /// `user@host:port #N`: which connection of the process this is.
    pub fn label(&self) -> String {
        format!("{} #{}", self.name(), self.serial)
    }

    /// Sends SSH_MSG_DISCONNECT, after the host keys being learned are
    /// (a moment at most).
    pub async fn close(&self) {
        let learning = self.learning.lock().expect("learning lock").take();
        if let Some(task) = learning {
            // A server that announced nothing (Dropbear, tinysshd) is not
            // waited for.
            if self.announced.arrived.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = tokio::time::timeout(LEARN_AT_CLOSE, task).await;
            } else {
                task.abort();
            }
        }
        let _ = self.handle.disconnect(russh::Disconnect::ByApplication, "bye", "en").await;
    }
}

/// How long after the login a server's host key announcement is waited
/// for (OpenSSH sends it at once).
const LEARN_WAIT: Duration = Duration::from_secs(10);
/// How long a closing connection waits for host keys being learned.
const LEARN_AT_CLOSE: Duration = Duration::from_secs(2);

/// Why an exec channel did not open.
#[derive(Debug)]
pub enum ExecError {
    /// The server has as many session channels open as it allows.
    Full,
    /// Anything else.
    Other(Error),
}

/// What a remote command said on stderr and how it ended.
pub type ExecStatus = crate::process::Collected;

/// A key exchange with nothing in common, in words: which side lacks what,
/// and what would help (ssh_config, or the server's administrator).
fn no_common(where_: &str, kind: &russh::AlgorithmKind, ours: &[String], theirs: &[String]) -> String {
    use russh::AlgorithmKind as K;
    let (what, directive) = match kind {
        K::Kex => ("key exchange", "KexAlgorithms"),
        K::Key => ("host key type", "HostKeyAlgorithms"),
        K::Cipher => ("cipher", "Ciphers"),
        K::Mac => ("MAC", "MACs"),
        K::Compression => ("compression", "Compression"),
    };
    // ext-info-c and kex-strict-* announce extensions; they are not choices.
    let real = |n: &&String| !(n.starts_with("ext-info-") || n.starts_with("kex-strict-"));
    let theirs: Vec<&String> = theirs.iter().filter(real).collect();
    let ours: Vec<&String> = ours.iter().filter(real).collect();
    let list = |l: &[&String]| l.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
    let implemented = crate::config::algorithms::implemented(directive);
    let usable: Vec<&String> = theirs.iter().copied().filter(|n| implemented.contains(n)).collect();
    if matches!(kind, K::Key) && !usable.is_empty() && usable.iter().all(|n| *n == "ssh-rsa") {
        return format!(
            "{where_}: the server offers only an ssh-rsa host key signed with SHA-1, which sshmail refuses \
             (as OpenSSH 8.8 and later do); ask its administrator for an ed25519 host key, or, if you trust \
             this server, add `HostKeyAlgorithms +ssh-rsa` to its Host entry in ~/.ssh/config"
        );
    }
    if let Some(first) = usable.first() {
        return format!(
            "{where_}: the server's {what} ({}) is not among those sshmail offers here ({}); if you accept it, \
             add `{directive} +{first}` to its Host entry in ~/.ssh/config",
            list(&theirs),
            list(&ours)
        );
    }
    format!(
        "{where_}: the server allows only the {what} {}, which sshmail does not implement; \
         ask its administrator to also allow one of: {}",
        list(&theirs),
        list(&ours)
    )
}

/// The host key algorithms to ask for, from `all`: those of the key types
/// known_hosts holds for the host first, then the rest in their order (as
/// OpenSSH does): a host known by an older key type (an ECDSA or RSA line
/// written years ago) is met with that key, not with a newer one that
/// nothing here can verify.
fn host_key_order(all: &[russh::keys::Algorithm], known: &[String]) -> Vec<russh::keys::Algorithm> {
    use russh::keys::Algorithm;
    let family = |a: &Algorithm, k: &Algorithm| match (a, k) {
        (Algorithm::Rsa { .. }, Algorithm::Rsa { .. }) => true,
        _ => a == k,
    };
    let known: Vec<Algorithm> = known.iter().filter_map(|t| Algorithm::new(t).ok()).collect();
    let (mut first, rest): (Vec<Algorithm>, Vec<Algorithm>) =
        all.iter().cloned().partition(|a| known.iter().any(|k| family(a, k)));
    // In the order known_hosts has them.
    first.sort_by_key(|a| known.iter().position(|k| family(a, k)));
    first.extend(rest);
    first
}

/// The connection's settings: the algorithms `target` allows, host key
/// types ordered by what known_hosts holds (`known`), host certificates
/// asked for first when an `@cert-authority` line names the host
/// (`authority`).
fn client_config(target: &SshTarget, known: &[String], authority: bool) -> client::Config {
    use std::borrow::Cow;
    let a = &target.algorithms;
    // As OpenSSH: the host key types known_hosts holds for the host come
    // first, unless HostKeyAlgorithms says otherwise.
    let key = if a.host_key_default { host_key_order(&a.host_key, known) } else { a.host_key.clone() };
    let mut preferred = russh::Preferred {
        kex: Cow::Owned(a.kex.clone()),
        key: Cow::Owned(key),
        cipher: Cow::Owned(a.cipher.clone()),
        mac: Cow::Owned(a.mac.clone()),
        host_key_certificates: if authority { Cow::Owned(a.host_key.clone()) } else { Cow::Borrowed(&[]) },
        ..Default::default()
    };
    if target.compress {
        preferred.compression =
            Cow::Borrowed(&[russh::compression::ZLIB_LEGACY, russh::compression::ZLIB, russh::compression::NONE]);
    }
    // A frozen link is noticed by keepalives (ServerAliveInterval and
    // ServerAliveCountMax, 4 s and 2 by default: within 12 s), however long
    // a mail server may take to answer.
    client::Config {
        preferred,
        keepalive_interval: Some(target.alive_interval.max(Duration::from_millis(500))),
        keepalive_max: target.alive_max,
        window_size: 8 * 1024 * 1024,
        nodelay: true,
        ..Default::default()
    }
}

fn host_key_error(t: &SshTarget, problem: HostKeyProblem) -> Error {
    Error::HostKey(Box::new(HostKeyRefused {
        host: {
            let (host, port) = t.known_as();
            known_hosts::lookup_name(host, port)
        },
        files: t.known_hosts.iter().map(|p| p.display().to_string()).collect(),
        problem,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_key_algorithms_put_the_types_known_hosts_holds_first_in_its_order() {
        use russh::keys::{Algorithm, EcdsaCurve, HashAlg};
        let mut all = crate::config::algorithms::Algorithms::default().host_key;
        all.push(Algorithm::Rsa { hash: None });
        let order = host_key_order(&all, &["ecdsa-sha2-nistp256".into()]);
        assert_eq!(order[..2], [Algorithm::Ecdsa { curve: EcdsaCurve::NistP256 }, Algorithm::Ed25519]);
        let order = host_key_order(&all, &["ssh-rsa".into(), "ssh-ed25519".into()]);
        assert_eq!(
            order[..4],
            [
                Algorithm::Rsa { hash: Some(HashAlg::Sha512) },
                Algorithm::Rsa { hash: Some(HashAlg::Sha256) },
                Algorithm::Rsa { hash: None },
                Algorithm::Ed25519
            ]
        );
        assert_eq!(order.len(), all.len(), "nothing dropped");
    }
}
