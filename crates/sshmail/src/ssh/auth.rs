//! The SSH login: agent keys, then identity files, then what the server
//! still asks for — a password, keyboard-interactive prompts (a second
//! factor) — answered by `ssh_password_command` where it is meant to
//! answer, or on the terminal, as `ssh` asks.
//!
//! A refusal says what was tried, what the server took (one factor of
//! two), which prompts went unanswered and what would help
//! ([`SshAuthRefused`]).

use std::sync::Arc;
use std::time::Duration;

use russh::client;
use russh::keys::agent::client::AgentClient;
use russh::keys::{PrivateKeyWithHashAlg, PublicKey};

use super::known_hosts;
use crate::config::SshTarget;
use crate::error::{Error, Result, SshAuthRefused};
use crate::secret::Secret;

/// Whether authentication may ask the user anything, and where.
#[derive(Debug, Clone, Default)]
pub enum Prompts {
    /// Never (a daemon, cron, scripts): the agent, unencrypted keys and
    /// `ssh_password_command` only.
    #[default]
    Never,
    /// On the terminal, if stdin is one: a key's passphrase, an SSH
    /// password, the server's keyboard-interactive prompts.
    OnTerminal,
    /// Relayed to a person elsewhere (`sshmail login` through the daemon:
    /// its terminal, over the control socket).
    Relayed(tokio::sync::mpsc::Sender<Question>),
}

/// A question relayed to a person ([`Prompts::Relayed`]).
pub struct Question {
    /// What the server said before it (its name and instructions for a
    /// round of prompts), printable, one entry a line.
    pub said: Vec<String>,
    /// The prompt, one printable line.
    pub prompt: String,
    /// The answer; dropped or None: none came.
    pub answer: tokio::sync::oneshot::Sender<Option<Secret>>,
}

impl Prompts {
    /// Whether a person is there to answer.
    pub fn person(&self) -> bool {
        use std::io::IsTerminal as _;
        match self {
            Prompts::Never => false,
            Prompts::OnTerminal => std::io::stdin().is_terminal(),
            Prompts::Relayed(_) => true,
        }
    }

    /// Asks `prompt` (after the lines `said`), never echoing the answer.
    /// None: nobody is there, or no answer came.
    async fn ask(&self, said: Vec<String>, prompt: String) -> Result<Option<Secret>> {
        match self {
            Prompts::Never => Ok(None),
            Prompts::OnTerminal => ask(said, prompt).await,
            Prompts::Relayed(to) => {
                let (answer, answered) = tokio::sync::oneshot::channel();
                if to.send(Question { said, prompt, answer }).await.is_err() {
                    return Ok(None);
                }
                Ok(answered.await.ok().flatten())
            }
        }
    }
}

/// How the login went.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// What succeeded: `agent key SHA256:…`, a key file, `password`.
    pub how: String,
    /// A person's answer was part of it (a password or code typed, a
    /// passphrase): another connection would need them again.
    pub by_person: bool,
}

/// How many passwords typed on the terminal are tried, as `ssh` does.
const PASSWORD_TRIES: usize = 3;
/// Keyboard-interactive rounds taken before giving up on a server that
/// keeps asking.
const PROMPT_ROUNDS: usize = 8;

/// What the login has seen so far, for the next step and the refusal.
struct Attempt {
    where_: String,
    tried: Vec<String>,
    /// The methods the server said may go on, from its last refusal.
    accepts: Vec<String>,
    /// What the server took as one step of several.
    accepted: Option<String>,
    /// Prompts nothing here could answer.
    unanswered: Vec<String>,
    /// A password (from the command or the terminal) was refused.
    password_refused: bool,
    /// A person answered something.
    person_answered: bool,
}

impl Attempt {
    /// Notes a refusal of `what`: what may go on, and whether it was a
    /// step taken.
    fn refused(&mut self, what: &str, remaining: &russh::MethodSet, partial: bool) {
        self.accepts = remaining.iter().map(|m| <&str>::from(m).to_string()).collect();
        if partial {
            self.accepted = Some(what.to_string());
        }
    }

    fn wants(&self, method: &str) -> bool {
        self.accepts.iter().any(|m| m == method)
    }
}

/// Authenticates; returns what succeeded.
pub(super) async fn authenticate<H: client::Handler>(
    handle: &mut client::Handle<H>,
    t: &SshTarget,
    prompts: &Prompts,
) -> Result<Authenticated> {
    let mut a = Attempt {
        where_: t.name(),
        tried: Vec::new(),
        accepts: Vec::new(),
        accepted: None,
        unanswered: Vec::new(),
        password_refused: false,
        person_answered: false,
    };
    let done = |how: String, a: &Attempt| Ok(Authenticated { how, by_person: a.person_answered });
    if let Some(how) = keys(handle, t, prompts, &mut a).await? {
        return done(how, &a);
    }
    if a.tried.is_empty() && a.accepts.is_empty() {
        // No key to offer: the "none" method tells what the server takes.
        let r = server(t, &a.where_, handle.authenticate_none(&t.user)).await?;
        if let client::AuthResult::Failure { remaining_methods, partial_success } = &r {
            a.refused("nothing", remaining_methods, *partial_success);
        } else {
            return done("no authentication".into(), &a);
        }
    }
    let terminal = prompts.person();
    let password = crate::process::password(&t.password, "ssh_password_command", t.timeout).await?;
    // OpenSSH's order: keyboard-interactive, then password.
    // Asked even without a terminal or a command: the error then shows
    // the server's question.
    if a.wants("keyboard-interactive")
        && let Some(how) = keyboard_interactive(handle, t, password.as_ref(), prompts, &mut a).await?
    {
        return done(how, &a);
    }
    if a.wants("password") && a.unanswered.is_empty() && (password.is_some() || terminal) {
        let tries = if password.is_some() { 1 } else { PASSWORD_TRIES };
        for _ in 0..tries {
            let typed;
            let pw = match &password {
                Some(pw) => pw.expose(),
                None => match prompts.ask(Vec::new(), format!("{}@{}'s password: ", t.user, t.host)).await? {
                    Some(p) => {
                        a.person_answered = true;
                        typed = p;
                        typed.expose()
                    }
                    None => break,
                },
            };
            a.tried.push("password".into());
            let r = server(t, &a.where_, handle.authenticate_password(&t.user, pw)).await?;
            match &r {
                client::AuthResult::Success => return done("password".into(), &a),
                client::AuthResult::Failure { remaining_methods, partial_success } => {
                    a.password_refused |= !partial_success;
                    a.refused("the password", remaining_methods, *partial_success);
                    if *partial_success || !a.wants("password") {
                        break;
                    }
                }
            }
        }
    }
    Err(Error::SshAuth(Box::new(SshAuthRefused {
        target: a.where_,
        copy_id: format!("ssh-copy-id -p {} {}@{}", t.port, t.user, t.host),
        tried: a.tried,
        accepts: a.accepts,
        accepted: a.accepted,
        unanswered: a.unanswered,
        password_command: password.is_some(),
        terminal,
        password_refused: a.password_refused,
    })))
}

/// The agent's keys, then the identity files: Some(what) once one is
/// accepted; None when none is, or when one was taken as a first factor
/// (`a.accepted`).
async fn keys<H: client::Handler>(
    handle: &mut client::Handle<H>,
    t: &SshTarget,
    prompts: &Prompts,
    a: &mut Attempt,
) -> Result<Option<String>> {
    let where_ = a.where_.clone();
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
                        a.tried.push("the ssh-agent (no answer)".into());
                        Vec::new()
                    }
                };
                for key in keys {
                    let public = key.public_key().into_owned();
                    if t.identities_only && !wanted.iter().any(|w| w.key_data() == public.key_data()) {
                        continue;
                    }
                    let cert = match key {
                        russh::keys::agent::AgentIdentity::Certificate { certificate, .. } => Some(certificate),
                        russh::keys::agent::AgentIdentity::PublicKey { .. } => None,
                    };
                    let label = match &cert {
                        Some(c) => format!(
                            "agent certificate \"{}\" of key {}",
                            crate::term::one_line(c.key_id(), 80),
                            known_hosts::fingerprint(&public)
                        ),
                        None => format!("agent key {}", known_hosts::fingerprint(&public)),
                    };
                    let hash = match signature(handle, &public, &t.algorithms).await {
                        Ok(hash) => hash,
                        Err(why) => {
                            a.tried.push(format!("{label} (not offered: {why})"));
                            continue;
                        }
                    };
                    a.tried.push(label.clone());
                    let signed = match cert {
                        Some(cert) => {
                            within(
                                t.timeout,
                                &where_,
                                "signing with the ssh-agent",
                                handle.authenticate_certificate_with(&t.user, cert, hash, &mut agent),
                            )
                            .await
                        }
                        None => {
                            within(
                                t.timeout,
                                &where_,
                                "signing with the ssh-agent",
                                handle.authenticate_publickey_with(&t.user, public, hash, &mut agent),
                            )
                            .await
                        }
                    };
                    match signed {
                        Ok(Ok(client::AuthResult::Success)) => return Ok(Some(label)),
                        Ok(Ok(client::AuthResult::Failure { remaining_methods, partial_success })) => {
                            a.refused(&label, &remaining_methods, partial_success);
                            if partial_success {
                                return Ok(None);
                            }
                        }
                        Ok(Err(e)) => tracing::debug!("agent signing failed: {e}"),
                        Err(e) => {
                            tracing::warn!("{e}; going on without it");
                            break;
                        }
                    }
                }
            }
            Ok(Err(e)) => a.tried.push(format!("the ssh-agent at {} (unusable: {e})", socket.display())),
            Err(e) => {
                tracing::warn!("{e}; going on without it");
                a.tried.push("the ssh-agent (no answer)".into());
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
        // `IdentityFile key.pub`: a public key names an agent's key (tried
        // above); there is no private key here to sign with.
        if read_public_key_file(&path).is_some() {
            a.tried.push(format!("{} (a public key, and the agent has no key for it)", path.display()));
            continue;
        }
        let key = match russh::keys::load_secret_key(&path, None) {
            Ok(k) => k,
            Err(russh::keys::Error::KeyIsEncrypted) => {
                let asked = prompts.ask(Vec::new(), format!("Enter passphrase for key '{}': ", path.display())).await?;
                let Some(pass) = asked else {
                    let why = match prompts {
                        Prompts::OnTerminal => "no terminal to ask for its passphrase",
                        Prompts::Relayed(_) => "no passphrase was given",
                        Prompts::Never => "this run asks for no passphrase",
                    };
                    a.tried.push(format!(
                        "{} (encrypted; {why} — add it to the agent: ssh-add {})",
                        path.display(),
                        path.display()
                    ));
                    continue;
                };
                a.person_answered = true;
                russh::keys::load_secret_key(&path, Some(pass.expose()))
                    .map_err(|e| Error::Auth(format!("cannot decrypt {}: {e}", path.display())))?
            }
            Err(e) => {
                a.tried.push(format!("{} (unreadable: {e})", path.display()));
                continue;
            }
        };
        let public = key.public_key().clone();
        let key = Arc::new(key);
        // Its certificate first, as ssh offers it: CertificateFile when it
        // certifies this key, else KEY-cert.pub beside it.
        if let Some((cert_path, cert)) = certificate_for(&path, &public, t.certificate.as_deref()) {
            let label = format!("{} with certificate {}", path.display(), cert_path.display());
            a.tried.push(label.clone());
            match server(t, &where_, handle.authenticate_openssh_cert(&t.user, key.clone(), cert)).await? {
                client::AuthResult::Success => return Ok(Some(label)),
                client::AuthResult::Failure { remaining_methods, partial_success } => {
                    a.refused(&label, &remaining_methods, partial_success);
                    if partial_success {
                        return Ok(None);
                    }
                }
            }
        }
        let label = path.display().to_string();
        let hash = match signature(handle, &public, &t.algorithms).await {
            Ok(hash) => hash,
            Err(why) => {
                a.tried.push(format!("{label} (not offered: {why})"));
                continue;
            }
        };
        a.tried.push(label.clone());
        let r =
            server(t, &where_, handle.authenticate_publickey(&t.user, PrivateKeyWithHashAlg::new(key, hash))).await?;
        match r {
            client::AuthResult::Success => return Ok(Some(label)),
            client::AuthResult::Failure { remaining_methods, partial_success } => {
                a.refused(&label, &remaining_methods, partial_success);
                if partial_success {
                    return Ok(None);
                }
            }
        }
    }
    Ok(None)
}

/// The server's keyboard-interactive prompts: a password prompt is
/// answered by `ssh_password_command` when there is one; every other prompt
/// (a one-time code, a PIN) by a person (on the terminal or relayed),
/// showing the server's words, or not at all (noted in `a.unanswered`).
async fn keyboard_interactive<H: client::Handler>(
    handle: &mut client::Handle<H>,
    t: &SshTarget,
    password: Option<&Secret>,
    prompts: &Prompts,
    a: &mut Attempt,
) -> Result<Option<String>> {
    let terminal = prompts.person();
    let where_ = a.where_.clone();
    a.tried.push("keyboard-interactive".into());
    let mut r = server(t, &where_, handle.authenticate_keyboard_interactive_start(&t.user, None::<String>)).await?;
    let mut answered_password = false;
    for _ in 0..PROMPT_ROUNDS {
        match r {
            client::KeyboardInteractiveAuthResponse::Success => return Ok(Some("keyboard-interactive".into())),
            client::KeyboardInteractiveAuthResponse::Failure { remaining_methods, partial_success } => {
                a.password_refused |= answered_password && !partial_success;
                a.refused("keyboard-interactive", &remaining_methods, partial_success);
                return Ok(None);
            }
            client::KeyboardInteractiveAuthResponse::InfoRequest { name, instructions, prompts: asked } => {
                let mut answers = Vec::with_capacity(asked.len());
                for p in &asked {
                    let shown = crate::term::one_line(&p.prompt, 200);
                    match password {
                        Some(pw) if is_password_prompt(&p.prompt) => {
                            answered_password = true;
                            answers.push(pw.expose().to_string());
                            continue;
                        }
                        _ => {}
                    }
                    if !terminal {
                        a.unanswered.push(shown.trim().to_string());
                        return Ok(None);
                    }
                    let said = if answers.is_empty() {
                        [&name, &instructions]
                            .into_iter()
                            .map(|text| crate::term::printable(text.trim()).into_owned())
                            .filter(|text| !text.is_empty())
                            .collect()
                    } else {
                        Vec::new()
                    };
                    match prompts.ask(said, shown).await? {
                        Some(answer) => {
                            a.person_answered = true;
                            answers.push(answer.expose().to_string());
                        }
                        None => {
                            a.unanswered.push(crate::term::one_line(&p.prompt, 200).trim().to_string());
                            return Ok(None);
                        }
                    }
                }
                r = server(t, &where_, handle.authenticate_keyboard_interactive_respond(answers)).await?;
            }
        }
    }
    a.tried.push(format!("(the server asked more than {PROMPT_ROUNDS} rounds of questions)"));
    Ok(None)
}

/// Whether a keyboard-interactive prompt asks for the account's password
/// (PAM's "Password: "), not for a one-time code or a PIN
/// ("One-time password (OATH)", "Verification code", "Passcode").
fn is_password_prompt(prompt: &str) -> bool {
    let p = prompt.to_ascii_lowercase();
    let second_factor = ["one-time", "one time", "otp", "oath", "token", "verification", "passcode", "code", "pin"];
    p.contains("password") && !second_factor.iter().any(|w| p.contains(w))
}

/// A request to the server, with the connection's deadline.
async fn server<T>(
    t: &SshTarget,
    where_: &str,
    fut: impl std::future::Future<Output = std::result::Result<T, russh::Error>>,
) -> Result<T> {
    within(t.timeout, where_, "the server", fut).await?.map_err(|e| Error::Connect(format!("{where_}: {e}")))
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

/// The signature algorithm to use with `key` here: PubkeyAcceptedAlgorithms'
/// first that the server takes (RFC 8308's server-sig-algs). SHA-1
/// `ssh-rsa` only when asked for, or, with the default list, for a server
/// that knows nothing better. Err: why the key is not offered.
async fn signature<H: client::Handler>(
    handle: &client::Handle<H>,
    key: &PublicKey,
    a: &crate::config::algorithms::Algorithms,
) -> std::result::Result<Option<russh::keys::HashAlg>, String> {
    use russh::keys::{Algorithm, HashAlg};
    if !key.algorithm().is_rsa() {
        return if a.pubkey.contains(&key.algorithm()) {
            Ok(None)
        } else {
            Err(format!("PubkeyAcceptedAlgorithms leaves out {}", key.algorithm().as_str()))
        };
    }
    let accepted: Vec<Option<HashAlg>> =
        a.pubkey.iter().filter_map(|alg| if let Algorithm::Rsa { hash } = alg { Some(*hash) } else { None }).collect();
    // The server's best RSA signature; None: it did not say.
    let best = handle.best_supported_rsa_hash().await.ok().flatten().flatten();
    let takes = |e: &Option<HashAlg>| match (e, best) {
        // Asked for by name (the default list has no ssh-rsa).
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(b)) => *e == b || (b == HashAlg::Sha512 && *e == HashAlg::Sha256),
    };
    match accepted.iter().find(|e| takes(e)) {
        Some(e) => Ok(*e),
        None if best.is_none() && a.pubkey_default => Ok(None),
        None => Err(match best {
            None => "the server takes only SHA-1 ssh-rsa signatures, which PubkeyAcceptedAlgorithms leaves out".into(),
            Some(_) => "PubkeyAcceptedAlgorithms allows no RSA signature the server takes".into(),
        }),
    }
}

/// The user certificate for the key at `path` (`public`): `configured`
/// (CertificateFile) if it certifies this key, else `KEY-cert.pub`. A
/// file that does not parse or certifies another key is passed over.
fn certificate_for(
    path: &std::path::Path,
    public: &PublicKey,
    configured: Option<&std::path::Path>,
) -> Option<(std::path::PathBuf, russh::keys::Certificate)> {
    let mut beside = path.as_os_str().to_owned();
    beside.push("-cert.pub");
    let candidates = configured.map(std::path::Path::to_path_buf).into_iter().chain([std::path::PathBuf::from(beside)]);
    for file in candidates {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        match russh::keys::Certificate::from_openssh(text.trim()) {
            Ok(cert) if cert.public_key() == public.key_data() => return Some((file, cert)),
            Ok(_) => tracing::debug!("{} certifies another key than {}", file.display(), path.display()),
            Err(e) => tracing::warn!("{}: not an OpenSSH certificate ({e}); passed over", file.display()),
        }
    }
    None
}

/// The public key of an identity: `KEY.pub` beside it, or the file itself
/// when it is a public key (`IdentityFile key.pub`).
fn read_public_key(identity: &std::path::Path) -> Option<PublicKey> {
    let mut beside = identity.as_os_str().to_owned();
    beside.push(".pub");
    read_public_key_file(identity).or_else(|| read_public_key_file(std::path::Path::new(&beside)))
}

/// `file` as an OpenSSH public key, if it is one (a small file of one line).
fn read_public_key_file(file: &std::path::Path) -> Option<PublicKey> {
    if std::fs::metadata(file).ok()?.len() > 16 * 1024 {
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    PublicKey::from_openssh(text.trim()).ok()
}

/// Asks on the terminal, if stdin is one, never echoing (after printing
/// the lines `said` on stderr): one question at a time (accounts connect
/// concurrently), read on a blocking thread so that the other
/// connections' keepalives and transfers go on. None: no terminal.
pub async fn ask(said: Vec<String>, prompt: String) -> Result<Option<Secret>> {
    use std::io::IsTerminal as _;
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let _turn = ONE_AT_A_TIME.lock().await;
    for line in said {
        crate::errln!("{line}");
    }
    tokio::task::spawn_blocking(move || rpassword::prompt_password(prompt))
        .await
        .map_err(|e| Error::Auth(format!("cannot read from the terminal: {e}")))?
        .map(|s| Some(Secret::new(s)))
        .map_err(|e| Error::Auth(format!("cannot read from the terminal: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_prompt_is_told_from_a_second_factor_prompt() {
        for p in ["Password: ", "sshmail-test@host's password: ", "Enter PASSWORD for alice:"] {
            assert!(is_password_prompt(p), "{p}");
        }
        for p in [
            "One-time password (OATH) for `alice': ",
            "Verification code: ",
            "Passcode or option (1-3): ",
            "OTP: ",
            "Enter your PIN: ",
        ] {
            assert!(!is_password_prompt(p), "{p}");
        }
    }
}
