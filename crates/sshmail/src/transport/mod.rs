//! One byte stream to the mail server, however it is made.
//!
//! | via | what |
//! |---|---|
//! | `forward` | direct-tcpip channel through the pooled SSH connection |
//! | `exec` | exec channel running the server's preauthenticated binary (imapd) |
//! | `command` | a local command's stdin/stdout (argv; a shell only if written) |
//! | `tls` | TLS to the server, certificates checked against the system roots |
//! | `starttls` | plain TCP, then IMAP STARTTLS before anything else |
//!
//! Whatever the transport, the protocol layer sees `AsyncRead + AsyncWrite`.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use sshmail_proto::imap;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};

pub mod greeting;

use crate::config::{Command, Route, TlsSettings, Via};
use crate::error::{Error, Result};
use crate::process::{Collected, shell_quote};
use crate::ssh::SshPool;
use crate::ssh::session::ExecStatus;

/// The preauthenticated IMAP servers sshmail tries, in order, when none is
/// given: the program, and the arguments that make it run preauthenticated.
/// Each is probed by its greeting; the first that greets `* PREAUTH` wins.
pub const IMAPD_CANDIDATES: &[(&str, &str)] = &[
    ("/usr/lib/dovecot/imap", ""),
    ("/usr/libexec/dovecot/imap", ""),
    ("/usr/local/libexec/dovecot/imap", ""),
    ("/usr/sbin/imap4d", " --inetd --preauth"),
    // Courier's binary wants the Maildir; Debian's /usr/sbin/imapd is its
    // start/stop script, and elsewhere that path is UW's imapd.
    ("/usr/bin/imapd", " Maildir"),
    ("/usr/lib/courier/courier/imapd", " Maildir"),
    ("/usr/sbin/imapd", ""),
    ("/usr/local/sbin/imapd", ""),
    ("/etc/rimapd", ""),
];

pub use crate::wire::Stream;

/// An open transport.
pub struct Opened {
    /// The stream.
    pub stream: Box<dyn Stream>,
    /// Who is on the other end, for messages.
    pub peer: String,
    /// A PREAUTH greeting is expected and safe here: a process we started
    /// (exec, command) runs as the user already; on a network port it is
    /// accepted only when the account says `allow_preauth`.
    pub preauth_ok: bool,
    /// The server's greeting when it was read here already (the imapd
    /// probe; STARTTLS, where it is kept without the capabilities said
    /// before TLS): the session's first bytes, read before `stream`'s.
    pub greeting: Option<Vec<u8>>,
    /// Diagnostics of a process on the other end (exec, command).
    pub diagnostics: Option<Arc<Collected>>,
    /// The SSH connection it runs on (`user@host:port #N`), if any.
    pub connection: Option<String>,
}

/// Opens a stream along `route`.
pub async fn open(route: &Route, pool: &SshPool) -> Result<Opened> {
    let server = route.server();
    match &route.via {
        Via::Forward | Via::Exec(_) => {
            let Some((target, jumps)) = &route.ssh else {
                return Err(Error::Config(format!("the route to {server} has no SSH destination")));
            };
            if route.via == Via::Forward {
                let f = pool.forward(target, jumps, &route.server_host, route.server_port).await?;
                return Ok(Opened {
                    stream: Box::new(f.stream),
                    peer: format!("{server} (via {})", f.via),
                    preauth_ok: route.allow_preauth,
                    greeting: None,
                    diagnostics: f.proxy,
                    connection: Some(f.label),
                });
            }
            let started = match &route.via {
                Via::Exec(Some(c)) => {
                    let command = remote_command(c);
                    let (stream, status, connection) = pool.exec(target, jumps, &exec_line(c)).await?;
                    Started { command, stream: Box::new(stream), status, connection, greeting: None }
                }
                _ => detect_imapd(pool, target, jumps).await?,
            };
            Ok(Opened {
                stream: started.stream,
                peer: format!("`{}` on {}", started.command, target.name()),
                preauth_ok: true,
                greeting: started.greeting,
                diagnostics: Some(started.status),
                connection: Some(started.connection),
            })
        }
        Via::Command(c) => open_command(c),
        Via::Tls => {
            let tcp = connect_tcp(route).await?;
            let tls = tls_handshake(tcp, &route.server_host, &route.tls, ACCOUNT_TLS_KEYS, route.timeout).await?;
            Ok(Opened {
                stream: Box::new(tls),
                peer: format!("{server} (TLS)"),
                preauth_ok: route.allow_preauth,
                greeting: None,
                diagnostics: None,
                connection: None,
            })
        }
        Via::StartTls => {
            let tcp = connect_tcp(route).await?;
            let (tcp, said) = imap_starttls(tcp, &server, route.timeout).await?;
            let tls = tls_handshake(tcp, &route.server_host, &route.tls, ACCOUNT_TLS_KEYS, route.timeout).await?;
            Ok(Opened {
                stream: Box::new(tls),
                peer: format!("{server} (STARTTLS)"),
                preauth_ok: false,
                greeting: Some(greeting::after_starttls(&said)),
                diagnostics: None,
                connection: None,
            })
        }
    }
}

/// The command line for the remote shell: an argument vector is quoted word
/// by word; a string is the user's own shell text and goes as written.
pub fn remote_command(c: &Command) -> String {
    match c {
        Command::Shell(s) => s.clone(),
        Command::Argv(v) => v.iter().map(|w| shell_quote(w)).collect::<Vec<_>>().join(" "),
    }
}

/// The line the remote shell runs for `c`: an argument vector (a simple
/// command sshmail quoted) after `exec`, so that the shell becomes the
/// program instead of waiting beside it (Debian's dash keeps a shell per
/// session otherwise: twice the server's processes); the user's own shell
/// text as written.
pub fn exec_line(c: &Command) -> String {
    match c {
        Command::Shell(s) => s.clone(),
        Command::Argv(_) => format!("exec {}", remote_command(c)),
    }
}

/// A remote imapd started: its command, its stream, what it says on
/// stderr and its exit, the connection it runs on, and its greeting when
/// it was read to find it.
struct Started {
    command: String,
    stream: Box<dyn Stream>,
    status: Arc<ExecStatus>,
    connection: String,
    greeting: Option<Vec<u8>>,
}

/// Finds the remote imapd: lists which candidates exist, then starts each
/// in turn and reads its greeting. The first that greets `* PREAUTH` is the
/// one, and its session goes on (the greeting is handed on to the IMAP
/// layer). The error names every candidate tried and what each said.
///
/// What was found is remembered for the process, per SSH destination (and
/// jumps): later sessions (another folder, a reconnect) start it at once,
/// and while one session detects, the others to the same host wait for its
/// answer instead of probing too (which would open twice the channels). A
/// remembered imapd that no longer greets PREAUTH is detected afresh.
async fn detect_imapd(
    pool: &SshPool,
    target: &crate::config::SshTarget,
    jumps: &[crate::config::SshTarget],
) -> Result<Started> {
    type Found = Arc<tokio::sync::Mutex<Option<String>>>;
    static FOUND: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, Found>>> =
        std::sync::OnceLock::new();
    let key = format!("{} via {:?}", target.name(), jumps.iter().map(|j| j.name()).collect::<Vec<_>>());
    let found: Found = FOUND.get_or_init(Default::default).lock().expect("imapd cache").entry(key).or_default().clone();
    let remembered = found.lock().await.clone();
    if let Some(command) = &remembered
        && let Ok(opened) = start_preauth(pool, target, jumps, command).await?
    {
        return Ok(opened);
    }
    let mut found = found.lock().await;
    // Another session may have detected it meanwhile.
    if let Some(command) = (*found).clone().filter(|c| Some(c) != remembered.as_ref())
        && let Ok(opened) = start_preauth(pool, target, jumps, &command).await?
    {
        return Ok(opened);
    }
    let opened = probe_imapd(pool, target, jumps).await?;
    *found = Some(opened.command.clone());
    Ok(opened)
}

/// Starts `command` and reads its greeting: the session when it greets
/// PREAUTH, else what it said (or, with its stderr, why it said nothing).
async fn start_preauth(
    pool: &SshPool,
    target: &crate::config::SshTarget,
    jumps: &[crate::config::SshTarget],
    command: &str,
) -> Result<std::result::Result<Started, String>> {
    // A candidate is one program path and its options: `exec` it.
    let (mut stream, status, connection) = pool.exec(target, jumps, &format!("exec {command}")).await?;
    let first = greeting::first(&mut stream, target.timeout.min(std::time::Duration::from_secs(10))).await;
    match first.bytes {
        bytes if !bytes.is_empty() && imap::Greeting::parse(&bytes) == imap::Greeting::PreAuth => Ok(Ok(Started {
            command: command.to_string(),
            stream: Box::new(stream),
            status,
            connection,
            greeting: Some(bytes),
        })),
        bytes if !bytes.is_empty() => {
            let line = String::from_utf8_lossy(&bytes);
            let line = line.lines().next().unwrap_or("").chars().take(100).collect::<String>();
            Ok(Err(format!("{command}: greeted `{line}`, not PREAUTH")))
        }
        _ => {
            let exit = status
                .wait_exit(crate::process::EXIT_WAIT)
                .await
                .map(|c| format!("exit status {c}"))
                .unwrap_or_else(|| "no exit status".into());
            let err = status.stderr();
            let err = err.lines().last().unwrap_or("").chars().take(160).collect::<String>();
            Ok(Err(format!(
                "{command}: no greeting ({exit}){}",
                if err.is_empty() { String::new() } else { format!(": {err}") }
            )))
        }
    }
}

/// Lists which candidates exist, then starts each in turn until one greets
/// PREAUTH.
async fn probe_imapd(
    pool: &SshPool,
    target: &crate::config::SshTarget,
    jumps: &[crate::config::SshTarget],
) -> Result<Started> {
    let probe = format!(
        "for p in {}; do if [ -x \"$p\" ]; then echo \"$p\"; fi; done; true",
        IMAPD_CANDIDATES.iter().map(|(p, _)| *p).collect::<Vec<_>>().join(" ")
    );
    let (out, _) = pool.run(target, jumps, &probe).await?;
    let present: Vec<String> = String::from_utf8_lossy(&out).lines().map(str::to_string).collect();
    let mut said = Vec::new();
    for (program, args) in IMAPD_CANDIDATES.iter().filter(|(p, _)| present.iter().any(|f| f == p)) {
        let command = format!("{program}{args}");
        match start_preauth(pool, target, jumps, &command).await? {
            Ok(opened) => {
                tracing::info!("found the IMAP server {command} on {}", target.name());
                return Ok(opened);
            }
            Err(what) => said.push(what),
        }
    }
    let tried = if said.is_empty() {
        format!("none of {} exists there", IMAPD_CANDIDATES.iter().map(|(p, _)| *p).collect::<Vec<_>>().join(", "))
    } else {
        format!("tried: {}", said.join("; "))
    };
    Err(Error::Connect(format!(
        "no preauthenticated IMAP server found on {} ({tried}); give its command with --imapd or `imapd` in the \
         config, or use via = \"forward\" with a server address",
        target.name()
    )))
}

/// A stream that first yields bytes already read from it.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `inner`, after `prefix`.
    pub fn new(prefix: Vec<u8>, inner: S) -> Prefixed<S> {
        Prefixed { prefix, pos: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn connect_tcp(route: &Route) -> Result<tokio::net::TcpStream> {
    crate::wire::connect_tcp(&route.server_host, route.server_port, route.timeout)
        .await
        .map_err(|e| Error::Connect(format!("{}: cannot connect: {e}", route.server())))
}

/// Reads the greeting, sends STARTTLS, and waits for its OK, on the bare
/// TCP stream. Reads byte-wise so that nothing meant for TLS is swallowed.
async fn imap_starttls(
    mut tcp: tokio::net::TcpStream,
    server: &str,
    timeout: std::time::Duration,
) -> Result<(tokio::net::TcpStream, Vec<u8>)> {
    // Nothing follows the greeting until STARTTLS is asked for.
    let said = greeting::first(&mut tcp, timeout).await;
    if !matches!(said.end, greeting::End::Line) {
        return Err(Error::Protocol(format!("{server}: no greeting before STARTTLS ({:?})", said.end)));
    }
    let mut reader = tokio::io::BufReader::with_capacity(1, tcp);
    let read_line = async |reader: &mut tokio::io::BufReader<tokio::net::TcpStream>| -> Result<String> {
        let mut line = Vec::new();
        let mut limited = tokio::io::AsyncReadExt::take(&mut *reader, 8192);
        tokio::time::timeout(timeout, limited.read_until(b'\n', &mut line))
            .await
            .map_err(|_| Error::Protocol(format!("{server}: no answer before STARTTLS")))?
            .map_err(|e| Error::Connect(format!("{server}: {e}")))?;
        if !line.ends_with(b"\n") {
            return Err(Error::Protocol(format!("{server}: connection closed or line too long before STARTTLS")));
        }
        Ok(String::from_utf8_lossy(&line).trim_end().to_string())
    };
    let greeting = String::from_utf8_lossy(&said.bytes).trim_end().to_string();
    match imap::Greeting::parse(&said.bytes) {
        imap::Greeting::Ok => {}
        imap::Greeting::PreAuth => {
            return Err(Error::Protocol(format!(
                "{server} greeted with PREAUTH on a connection that must first switch to TLS — refusing (a PREAUTH \
                 here would mean talking in plain text)"
            )));
        }
        imap::Greeting::Bye(_) | imap::Greeting::NotImap(_) => {
            return Err(Error::Server(format!("{server} refused the connection: {greeting}")));
        }
    }
    reader.get_mut().write_all(b"S0 STARTTLS\r\n").await.map_err(|e| Error::Connect(format!("{server}: {e}")))?;
    loop {
        let line = read_line(&mut reader).await?;
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("S0 OK") {
            break;
        }
        if upper.starts_with("S0 ") {
            return Err(Error::Server(format!("{server} refused STARTTLS: {line}")));
        }
    }
    Ok((reader.into_inner(), said.bytes))
}

/// How an account's TLS settings are named, for advice in errors.
const ACCOUNT_TLS_KEYS: [&str; 3] = ["tls_ca_file (--tls-ca-file)", "tls_fingerprint", " (--tls-fingerprint)"];

/// A TLS client session on `stream`, with `host`'s certificate checked
/// by `settings`; `keys` name those settings in the advice of an error
/// (the CA file's, the fingerprint's, and what follows the fingerprint).
pub async fn tls_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    host: &str,
    settings: &TlsSettings,
    keys: [&str; 3],
    timeout: std::time::Duration,
) -> Result<tokio_rustls::client::TlsStream<S>> {
    let refused = Arc::new(Mutex::new(None));
    let config = tls_config(settings, refused.clone())?;
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|_| Error::Config(format!("{host:?} is not a valid TLS server name")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    tokio::time::timeout(timeout, connector.connect(name, stream))
        .await
        .map_err(|_| Error::Connect(format!("{host}: TLS handshake timed out")))?
        .map_err(|e| match refused.lock().expect("refused lock").take() {
            // Say what to do, not only what rustls said.
            Some(sha256) => Error::Connect(format!(
                "{host}: TLS handshake failed: the server's certificate is not trusted ({e}). If the server uses a \
                 self-signed certificate or a private CA, trust that CA with {}, or pin this very certificate with \
                 {} = \"{sha256}\"{}, after checking that fingerprint on the server itself",
                keys[0], keys[1], keys[2]
            )),
            None => Error::Connect(format!("{host}: TLS handshake failed: {e}")),
        })
}

/// The client config. With roots (not a pin), a certificate the roots do not
/// vouch for leaves its SHA-256 in `refused`, for the error message.
fn tls_config(settings: &TlsSettings, refused: Arc<Mutex<Option<String>>>) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?;
    if let Some(fp) = &settings.fingerprint {
        let want: Vec<u8> = parse_hex(fp).ok_or_else(|| Error::Config(format!("bad tls_fingerprint {fp:?}")))?;
        let verifier = pin::PinnedCert { sha256: want, provider };
        return Ok(builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(file) = &settings.ca_file {
        use rustls::pki_types::pem::PemObject as _;
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(file)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", file.display())))?;
        for c in certs {
            let c = c.map_err(|e| Error::Config(format!("{}: {e}", file.display())))?;
            roots.add(c).map_err(|e| Error::Config(format!("{}: {e}", file.display())))?;
        }
    }
    if roots.is_empty() {
        return Err(Error::Config(
            "no trusted CA certificates (install ca-certificates, or set tls_ca_file / tls_fingerprint)".into(),
        ));
    }
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?;
    let verifier = pin::Explained { inner: webpki, refused };
    Ok(builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth())
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let clean: String = s.chars().filter(|c| *c != ':').collect();
    let clean = clean.strip_prefix("sha256/").unwrap_or(&clean).to_string();
    if clean.len() != 64 {
        return None;
    }
    (0..32).map(|i| u8::from_str_radix(&clean[2 * i..2 * i + 2], 16).ok()).collect()
}

mod pin {
    //! Certificate pinning: the server's certificate must hash to the pin.
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use std::sync::Arc;

    /// The system's verification, remembering the fingerprint of a
    /// certificate it refused.
    #[derive(Debug)]
    pub struct Explained {
        pub inner: Arc<rustls::client::WebPkiServerVerifier>,
        pub refused: Arc<std::sync::Mutex<Option<String>>>,
    }

    fn sha256_hex(cert: &CertificateDer<'_>) -> String {
        use sha2::Digest as _;
        sha2::Sha256::digest(cert.as_ref()).iter().map(|b| format!("{b:02x}")).collect()
    }

    impl ServerCertVerifier for Explained {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            let r = self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
            if r.is_err() {
                *self.refused.lock().expect("refused lock") = Some(sha256_hex(end_entity));
            }
            r
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    }

    #[derive(Debug)]
    pub struct PinnedCert {
        pub sha256: Vec<u8>,
        pub provider: Arc<rustls::crypto::CryptoProvider>,
    }

    impl ServerCertVerifier for PinnedCert {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            let hex = sha256_hex(end_entity);
            let want: String = self.sha256.iter().map(|b| format!("{b:02x}")).collect();
            if hex == want {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(rustls::Error::General(format!("server certificate sha256 {hex} does not match tls_fingerprint")))
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider.signature_verification_algorithms.supported_schemes()
        }
    }
}

/// Runs a local command (`via = "command"`) and talks to it over its
/// stdin/stdout ([`crate::process::spawn_stream`]).
fn open_command(c: &Command) -> Result<Opened> {
    let (stream, diag, shown) = crate::process::spawn_stream(c, "tunnel command")?;
    Ok(Opened {
        stream: Box::new(stream),
        peer: shown,
        preauth_ok: true,
        greeting: None,
        diagnostics: Some(diag),
        connection: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_shell_unless_asked_remote_words_are_quoted() {
        let c = Command::Argv(vec!["/usr/lib/dovecot/imap".into(), "-c".into(), "/tmp/my conf".into(), "it's".into()]);
        assert_eq!(remote_command(&c), "/usr/lib/dovecot/imap -c '/tmp/my conf' 'it'\\''s'");
        assert_eq!(remote_command(&Command::Shell("imapd 2>/dev/null".into())), "imapd 2>/dev/null");
        assert_eq!(exec_line(&c), "exec /usr/lib/dovecot/imap -c '/tmp/my conf' 'it'\\''s'");
        assert_eq!(
            exec_line(&Command::Shell("cd /x; imapd".into())),
            "cd /x; imapd",
            "the user's shell text as written"
        );
        assert_eq!(shell_quote("$(rm -rf ~)"), "'$(rm -rf ~)'");
    }

    #[tokio::test]
    async fn a_probed_greeting_is_handed_on_before_the_rest() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (mut server, client) = tokio::io::duplex(1024);
        server.write_all(b"A1 OK done\r\n").await.unwrap();
        drop(server);
        let mut s = Prefixed { prefix: b"* PREAUTH hi\r\n".to_vec(), pos: 0, inner: client };
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"* PREAUTH hi\r\nA1 OK done\r\n");
    }

    #[test]
    fn fingerprints_parse() {
        let hex = "AB:".repeat(31) + "AB";
        assert_eq!(parse_hex(&hex), Some(vec![0xab; 32]));
        assert_eq!(parse_hex("abc"), None);
    }
}
