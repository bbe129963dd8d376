//! One authenticated SSH connection, made in-process with russh.
//!
//! [`SshSession::connect`] does TCP (or a ProxyJump channel), key exchange,
//! host key verification against our own known_hosts matcher, and the auth
//! chain: agent keys, then identity files, then a password only if the
//! account gives one. Channels come out as byte streams.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::agent::client::AgentClient;
use russh::keys::{PrivateKeyWithHashAlg, PublicKey};

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
    verdict: Arc<Mutex<Option<std::result::Result<String, HostKeyProblem>>>>,
}

/// What the handshake showed, for `sshmail doctor`.
#[derive(Debug, Clone, Default)]
pub struct Handshake {
    /// The host key's fingerprint and the known_hosts line that trusts it.
    pub host_key: String,
    /// What authenticated us: `agent key SHA256:…`, a key file, `password`.
    pub auth: String,
}

impl client::Handler for Handler {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &russh::keys::PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let key: &PublicKey = match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => key,
            // We do not ask for certificates (no host_key_certificates in
            // Preferred), so a certificate here is unexpected: refuse.
            russh::keys::PublicKeyOrCertificate::Certificate(_) => return Ok(false),
        };
        let t = &self.target;
        let (host, port) = t.known_as();
        let verdict = self.known.as_ref().map(|texts| known_hosts::check_texts(texts, host, port, key));
        let line = || format!("{} {}", known_hosts::lookup_name(host, port), key.to_openssh().unwrap_or_default());
        let refusal = match verdict {
            Ok(Verdict::Trusted(at)) => {
                tracing::debug!("host key for {} matches {at}", known_hosts::lookup_name(host, port));
                *self.verdict.lock().expect("verdict lock") =
                    Some(Ok(format!("{} ({at})", known_hosts::fingerprint(key))));
                return Ok(true);
            }
            Ok(Verdict::Unknown) if t.policy == HostKeyPolicy::AcceptNew => {
                let file = &t.known_hosts[0];
                match known_hosts::append_hashed(file, host, port, key) {
                    Ok(()) => {
                        *self.verdict.lock().expect("verdict lock") =
                            Some(Ok(format!("{} (added to {})", known_hosts::fingerprint(key), file.display())));
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
}

impl std::fmt::Debug for SshSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SshSession({})", self.target.name())
    }
}

impl SshSession {
    /// Connects and authenticates. `jump` is an already connected session
    /// through which to reach the target (ProxyJump).
    pub async fn connect(target: &SshTarget, jump: Option<Arc<SshSession>>, prompts: Prompts) -> Result<SshSession> {
        let where_ = target.name();
        let verdict = Arc::new(Mutex::new(None));
        // known_hosts is read once: it orders the host key algorithms asked
        // for, then checks the key the server shows.
        let known = known_hosts::read(&target.known_hosts).map_err(|e| e.to_string());
        let (known_host, known_port) = target.known_as();
        let types = known.as_deref().map(|t| known_hosts::known_types(t, known_host, known_port)).unwrap_or_default();
        let config = Arc::new(client_config(target, &types));
        let handler = Handler { target: target.clone(), known, verdict: verdict.clone() };
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
                    proxy_said = Some(said);
                    Ok(client::connect_stream(config, stream, handler).await)
                }
                (None, None) => {
                    let tcp = crate::wire::connect_tcp(&target.host, target.port, timeout)
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
                        with_proxy(Error::Connect(format!("{where_}: SSH connection failed: {e}"))).await
                    }
                });
            }
        };
        let auth = authenticate(&mut handle, target, prompts).await?;
        let host_key = verdict.lock().expect("verdict lock").take().and_then(Result::ok).unwrap_or_default();
        let handshake = Handshake { host_key, auth };
        tracing::info!("SSH connected to {where_}{}", if target.compress { " (compression requested)" } else { "" });
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(SshSession { handle, target: target.clone(), jump, usage: Arc::default(), serial, handshake })
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
            Ok(Err(e)) => {
                return Err(ExecError::Other(Error::Connect(format!("{where_}: cannot run `{command}`: {e}"))));
            }
            Ok(Ok(ch)) => ch,
        };
        let status = Arc::new(ExecStatus::default());
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

    /// Sends SSH_MSG_DISCONNECT.
    pub async fn close(&self) {
        let _ = self.handle.disconnect(russh::Disconnect::ByApplication, "bye", "en").await;
    }
}

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

/// The host key algorithms to ask for: those of the key types known_hosts
/// holds for the host first, then the rest in russh's order (as OpenSSH
/// does): a host known by an older key type (an ECDSA or RSA line written
/// years ago) is met with that key, not with a newer one that nothing here
/// can verify.
fn host_key_order(known: &[String]) -> Vec<russh::keys::Algorithm> {
    use russh::keys::Algorithm;
    let family = |a: &Algorithm, k: &Algorithm| match (a, k) {
        (Algorithm::Rsa { .. }, Algorithm::Rsa { .. }) => true,
        _ => a == k,
    };
    let known: Vec<Algorithm> = known.iter().filter_map(|t| Algorithm::new(t).ok()).collect();
    let all = russh::Preferred::default().key.into_owned();
    let (mut first, rest): (Vec<Algorithm>, Vec<Algorithm>) =
        all.into_iter().partition(|a| known.iter().any(|k| family(a, k)));
    // In the order known_hosts has them.
    first.sort_by_key(|a| known.iter().position(|k| family(a, k)));
    first.extend(rest);
    first
}

fn client_config(target: &SshTarget, known: &[String]) -> client::Config {
    let mut preferred = russh::Preferred::default();
    if !known.is_empty() {
        preferred.key = std::borrow::Cow::Owned(host_key_order(known));
    }
    if target.compress {
        preferred.compression = std::borrow::Cow::Borrowed(&[
            russh::compression::ZLIB_LEGACY,
            russh::compression::ZLIB,
            russh::compression::NONE,
        ]);
    }
    // AES-GCM first where the CPU has AES instructions: measurably faster than
    // chacha20-poly1305 for bulk transfer.
    if std::arch::is_x86_feature_detected!("aes") {
        preferred.cipher = std::borrow::Cow::Borrowed(&[
            russh::cipher::AES_256_GCM,
            russh::cipher::CHACHA20_POLY1305,
            russh::cipher::AES_256_CTR,
        ]);
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

/// Whether authentication may ask the user anything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Prompts {
    /// Never (a daemon, cron, scripts): the agent and unencrypted keys only.
    #[default]
    Never,
    /// On the terminal, if stdin is one: a key's passphrase.
    OnTerminal,
}

/// Authenticates; returns what succeeded.
async fn authenticate(handle: &mut client::Handle<Handler>, t: &SshTarget, prompts: Prompts) -> Result<String> {
    let where_ = t.name();
    let mut tried = Vec::new();
    // The methods the server said may go on, from its last refusal, and
    // whether it took a step (one factor of two).
    let mut accepts = Vec::new();
    let mut partial = false;
    let mut note = |r: &client::AuthResult| {
        if let client::AuthResult::Failure { remaining_methods, partial_success } = r {
            accepts = remaining_methods.iter().map(|m| <&str>::from(m).to_string()).collect();
            partial |= *partial_success;
        }
    };
    let wanted: Vec<PublicKey> = t.identities.iter().filter_map(|p| read_public_key(p)).collect();

    // Every step waits at most the timeout: a hung agent (one waiting for
    // a confirmation nobody gives) is given up and the key files tried; a
    // server that does not answer is an error, not a hang.

    // 1. The agent (IdentityAgent, else SSH_AUTH_SOCK).
    if let Some(socket) = &t.agent {
        match within(t.timeout, &where_, "the ssh-agent", AgentClient::connect_uds(socket)).await {
            Ok(Ok(mut agent)) => {
                let keys = match within(t.timeout, &where_, "the ssh-agent", agent.request_identities()).await {
                    Ok(k) => k.unwrap_or_default(),
                    Err(e) => {
                        tracing::warn!("{e}; going on without it");
                        tried.push("the ssh-agent (no answer)".into());
                        Vec::new()
                    }
                };
                for key in keys {
                    let public = key.public_key().into_owned();
                    if t.identities_only && !wanted.iter().any(|w| w.key_data() == public.key_data()) {
                        continue;
                    }
                    let hash = rsa_hash(handle, &public).await;
                    tried.push(format!("agent key {}", known_hosts::fingerprint(&public)));
                    match within(
                        t.timeout,
                        &where_,
                        "signing with the ssh-agent",
                        handle.authenticate_publickey_with(&t.user, public, hash, &mut agent),
                    )
                    .await
                    {
                        Ok(Ok(r)) if r.success() => return Ok(tried.pop().unwrap_or_default()),
                        Ok(Ok(r)) => note(&r),
                        Ok(Err(e)) => tracing::debug!("agent signing failed: {e}"),
                        Err(e) => {
                            tracing::warn!("{e}; going on without it");
                            break;
                        }
                    }
                }
            }
            Ok(Err(e)) => tried.push(format!("the ssh-agent at {} (unusable: {e})", socket.display())),
            Err(e) => {
                tracing::warn!("{e}; going on without it");
                tried.push("the ssh-agent (no answer)".into());
            }
        }
    }

    // 2. Identity files: the listed ones, else OpenSSH's defaults.
    let files = if t.identities.is_empty() {
        ["id_ed25519", "id_ecdsa", "id_rsa"].iter().map(|n| crate::config::home().join(".ssh").join(n)).collect()
    } else {
        t.identities.clone()
    };
    for path in files {
        if !path.exists() {
            continue;
        }
        let key = match russh::keys::load_secret_key(&path, None) {
            Ok(k) => k,
            Err(russh::keys::Error::KeyIsEncrypted) => {
                let asked = match prompts {
                    Prompts::OnTerminal => prompt_passphrase(&path).await?,
                    Prompts::Never => None,
                };
                let Some(pass) = asked else {
                    let why = match prompts {
                        Prompts::OnTerminal => "no terminal to ask for its passphrase",
                        Prompts::Never => "this run asks for no passphrase",
                    };
                    tried.push(format!(
                        "{} (encrypted; {why} — add it to the agent: ssh-add {})",
                        path.display(),
                        path.display()
                    ));
                    continue;
                };
                russh::keys::load_secret_key(&path, Some(&pass))
                    .map_err(|e| Error::Auth(format!("cannot decrypt {}: {e}", path.display())))?
            }
            Err(e) => {
                tried.push(format!("{} (unreadable: {e})", path.display()));
                continue;
            }
        };
        let public = key.public_key().clone();
        let hash = rsa_hash(handle, &public).await;
        tried.push(path.display().to_string());
        let r = within(
            t.timeout,
            &where_,
            "the server",
            handle.authenticate_publickey(&t.user, PrivateKeyWithHashAlg::new(Arc::new(key), hash)),
        )
        .await?
        .map_err(|e| Error::Connect(format!("{where_}: {e}")))?;
        if r.success() {
            return Ok(tried.pop().unwrap_or_default());
        }
        note(&r);
    }

    // 3. A password, only when the account gives one.
    if let Some(pw) = crate::process::password(&t.password, "ssh_password_command", t.timeout).await? {
        tried.push("password".into());
        let r = within(t.timeout, &where_, "the server", handle.authenticate_password(&t.user, pw.expose()))
            .await?
            .map_err(|e| Error::Connect(format!("{where_}: {e}")))?;
        if r.success() {
            return Ok(tried.pop().unwrap_or_default());
        }
        note(&r);
        tried.push("keyboard-interactive".into());
        let mut r = within(
            t.timeout,
            &where_,
            "the server",
            handle.authenticate_keyboard_interactive_start(&t.user, None::<String>),
        )
        .await?
        .map_err(|e| Error::Connect(format!("{where_}: {e}")))?;
        for _ in 0..4 {
            match r {
                client::KeyboardInteractiveAuthResponse::Success => return Ok("keyboard-interactive".into()),
                client::KeyboardInteractiveAuthResponse::Failure { .. } => break,
                client::KeyboardInteractiveAuthResponse::InfoRequest { prompts, .. } => {
                    let answers = prompts.iter().map(|_| pw.expose().to_string()).collect();
                    r = within(
                        t.timeout,
                        &where_,
                        "the server",
                        handle.authenticate_keyboard_interactive_respond(answers),
                    )
                    .await?
                    .map_err(|e| Error::Connect(format!("{where_}: {e}")))?;
                }
            }
        }
    }
    Err(Error::SshAuth(Box::new(crate::error::SshAuthRefused { target: where_, tried, accepts, partial })))
}

/// `fut`, or an error naming `what` once `timeout` passes.
async fn within<T>(
    timeout: Duration,
    where_: &str,
    what: &str,
    fut: impl std::future::Future<Output = T>,
) -> Result<T> {
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| Error::Connect(format!("{where_}: {what} did not answer within {} s", timeout.as_secs())))
}

async fn rsa_hash(handle: &client::Handle<Handler>, key: &PublicKey) -> Option<russh::keys::HashAlg> {
    if key.algorithm().is_rsa() { handle.best_supported_rsa_hash().await.ok().flatten().flatten() } else { None }
}

fn read_public_key(private: &std::path::Path) -> Option<PublicKey> {
    let text = std::fs::read_to_string(private.with_extension("pub")).ok()?;
    PublicKey::from_openssh(text.trim()).ok()
}

/// Asks for a key's passphrase on the terminal, if there is one: one
/// prompt at a time (accounts connect concurrently), read on a blocking
/// thread so that the other connections' keepalives and transfers go on.
async fn prompt_passphrase(path: &std::path::Path) -> Result<Option<String>> {
    use std::io::IsTerminal as _;
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let _turn = ONE_AT_A_TIME.lock().await;
    let prompt = format!("Enter passphrase for key '{}': ", path.display());
    tokio::task::spawn_blocking(move || rpassword::prompt_password(prompt))
        .await
        .map_err(|e| Error::Auth(format!("cannot read passphrase: {e}")))?
        .map(Some)
        .map_err(|e| Error::Auth(format!("cannot read passphrase: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_key_algorithms_put_the_types_known_hosts_holds_first_in_its_order() {
        use russh::keys::{Algorithm, EcdsaCurve, HashAlg};
        let order = host_key_order(&["ecdsa-sha2-nistp256".into()]);
        assert_eq!(order[..2], [Algorithm::Ecdsa { curve: EcdsaCurve::NistP256 }, Algorithm::Ed25519]);
        let order = host_key_order(&["ssh-rsa".into(), "ssh-ed25519".into()]);
        assert_eq!(
            order[..4],
            [
                Algorithm::Rsa { hash: Some(HashAlg::Sha512) },
                Algorithm::Rsa { hash: Some(HashAlg::Sha256) },
                Algorithm::Rsa { hash: None },
                Algorithm::Ed25519
            ]
        );
        assert_eq!(order.len(), russh::Preferred::default().key.len(), "nothing dropped");
    }
}
