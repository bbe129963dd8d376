//! `sshmail login ACCOUNT` on the daemon's side: the SSH login made in the
//! daemon's pool, each question the server asks (a password, a one-time
//! code, a key's passphrase) relayed to the person's terminal over the
//! control connection and the answer handed back — never written to disk
//! or log. The pool then holds the connection (see
//! [`crate::ssh::SshPool::holding_logins`]) and the account's tasks, waiting
//! for it, go on at once.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::net::UnixStream;

use super::{Daemon, socket};
use crate::control::protocol::{Answer, MAX_REQUEST};
use crate::control::{Refusal, Response, Why};
use crate::error::Exit;
use crate::secret::Secret;
use crate::ssh::auth::{Prompts, Question};
use crate::stop::Stop;

/// How long a question waits for the person's answer.
const ANSWER_WAIT: Duration = Duration::from_secs(300);

impl Daemon {
    /// Answers a `login` request: questions and answers, then the login or
    /// a refusal.
    pub(super) async fn login_for_client(&self, mut stream: BufReader<UnixStream>, account: &str, end: Stop) {
        let response = self.login(&mut stream, account, end).await;
        if let Response::Refused(r) = &response {
            tracing::warn!(target: "sshmail::daemon", "{account}: sshmail login: {}", r.text);
        }
        socket::write_response(&mut stream, response).await;
    }

    async fn login(&self, stream: &mut BufReader<UnixStream>, account: &str, end: Stop) -> Response {
        let found = self.running.lock().expect("daemon lock").get(account).map(|r| r.account.clone());
        let Some(found) = found else {
            return Refusal::new(Why::NoAccount, format!("no account {account} in the daemon's config"), Exit::Usage)
                .into();
        };
        let Some((target, jumps)) = found.route.ssh.clone() else {
            return Refusal::new(
                Why::Failed,
                format!("account {account} reaches its server without SSH: there is nothing to log in to"),
                Exit::Usage,
            )
            .into();
        };
        let (to_person, mut questions) = tokio::sync::mpsc::channel::<Question>(1);
        let prompts = Prompts::Relayed(to_person);
        let login = self.pool.login(&target, &jumps, &prompts);
        tokio::pin!(login);
        let result = loop {
            tokio::select! {
                r = &mut login => break r,
                Some(q) = questions.recv() => {
                    socket::write_response(stream, Response::Ask { said: q.said, prompt: q.prompt }).await;
                    let answer = tokio::select! {
                        a = read_answer(stream) => a,
                        _ = end.wait() => None,
                    };
                    let _ = q.answer.send(answer);
                }
                _ = end.wait() => {
                    return Refusal::new(Why::Failed, "the daemon is stopping", Exit::Connect).into();
                }
            }
        };
        match result {
            Ok(text) => {
                tracing::info!(target: "sshmail::daemon", "{account}: logged in with sshmail login: {text}");
                // Every task waiting for it goes on now.
                for h in self.handles(&[]) {
                    if h.slot.status().is_some_and(|s| s.last_error.is_some()) {
                        h.wake.notify_one();
                    }
                }
                self.flush_outbox.notify_one();
                Response::LoggedIn { text }
            }
            Err(e) => {
                let e = e.for_account(account);
                Refusal::new(Why::Failed, e.to_string(), e.exit()).into()
            }
        }
    }
}

/// The person's answer line: None when none comes in time, the line is
/// not one, or the person gave up.
async fn read_answer(stream: &mut BufReader<UnixStream>) -> Option<Secret> {
    let mut line = Vec::new();
    let read = tokio::time::timeout(ANSWER_WAIT, async {
        let mut limited = (&mut *stream).take(MAX_REQUEST as u64);
        limited.read_until(b'\n', &mut line).await
    })
    .await;
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        return None;
    }
    let answer: Answer = serde_json::from_slice(&line).ok()?;
    answer.answer.map(Secret::new)
}
