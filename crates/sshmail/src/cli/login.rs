//! `sshmail login ACCOUNT`: a person logs in to an account's SSH host.
//! With a daemon running the config, the daemon makes the connection in
//! its pool and relays each of the server's questions here; the answers go
//! back over the control socket and nowhere else. Without one, this is the
//! first connect of a fetch, asked on this terminal.

use std::io::IsTerminal as _;
use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;

use crate::config;
use crate::control::{self, Answer, Command, NoAnswer, Response, Why};
use crate::error::Exit;
use crate::ssh::SshPool;
use crate::ssh::auth::Prompts;

/// How long the daemon may take to ask its first question (a TCP connect
/// and key exchange), or to answer after one (a push to approve on a
/// phone).
const DAEMON_WAIT: Duration = Duration::from_secs(330);

/// Runs `sshmail login`; the exit code.
pub async fn run(config_file: Option<&Path>, account: &str) -> Exit {
    if !std::io::stdin().is_terminal() {
        crate::errln!("sshmail: login asks the SSH server's questions on a terminal; run it in one");
        return Exit::Usage;
    }
    let (path, default) = config::config_path(config_file);
    let paths = control::Paths::for_config(&path, default);
    let (mut reply, mut stream) =
        match control::exchange(&paths, Command::Login { account: account.to_string() }, DAEMON_WAIT).await {
            Ok(r) => r,
            Err(NoAnswer::NotRunning(why, _)) => {
                tracing::debug!("{why}");
                return alone(&path, account).await;
            }
            Err(NoAnswer::Unsafe(why)) => {
                crate::errln!("sshmail: {why}");
                return Exit::Permissions;
            }
            Err(NoAnswer::Failed(why)) => {
                crate::errln!("sshmail: {why}");
                return Exit::Connect;
            }
        };
    loop {
        match reply {
            Response::Ask { said, prompt } => {
                let said = said.iter().map(|l| crate::term::printable(l).into_owned()).collect();
                let prompt = crate::term::one_line(&prompt, 200);
                let answer = match crate::ssh::auth::ask(said, prompt).await {
                    Ok(a) => a,
                    Err(e) => {
                        crate::errln!("sshmail: {e}");
                        None
                    }
                };
                let mut line =
                    serde_json::to_vec(&Answer { answer: answer.map(|s| s.expose().to_string()) }).unwrap_or_default();
                line.push(b'\n');
                if let Err(e) = stream.get_mut().write_all(&line).await {
                    crate::errln!("sshmail: the daemon went away: {e}");
                    return Exit::Connect;
                }
            }
            Response::LoggedIn { text } => {
                crate::outln!("sshmail: {account}: logged in: {text}; the daemon holds the connection");
                return Exit::Delivered;
            }
            Response::Refused(r) if r.why == Why::NoAccount => {
                crate::errln!(
                    "sshmail: the daemon for {} runs no account {account} (sshmail reload after adding it)",
                    path.display()
                );
                return Exit::Usage;
            }
            Response::Refused(r) => {
                crate::errln!("sshmail: {account}: {}", r.text);
                return r.exit();
            }
            other => {
                crate::errln!("sshmail: the daemon answered what was not asked: {other:?}");
                return Exit::Connect;
            }
        }
        reply = match control::next_reply(&mut stream, &paths, DAEMON_WAIT).await {
            Ok(r) => r,
            Err(NoAnswer::NotRunning(why, _) | NoAnswer::Failed(why) | NoAnswer::Unsafe(why)) => {
                crate::errln!("sshmail: {why}");
                return Exit::Connect;
            }
        };
    }
}

/// No daemon: the login a fetch would make first, on this terminal.
async fn alone(path: &Path, account: &str) -> Exit {
    let config = match config::Config::load(Some(path), &config::Overrides::default()) {
        Ok(c) => c,
        Err(e) => {
            crate::errln!("sshmail: {e}");
            return e.exit();
        }
    };
    let account = match config.account(account) {
        Ok(a) => a,
        Err(e) => {
            crate::errln!("sshmail: {e}");
            return e.exit();
        }
    };
    let Some((target, jumps)) = &account.route.ssh else {
        crate::errln!("sshmail: account {} reaches its server without SSH: nothing to log in to", account.name);
        return Exit::Usage;
    };
    let pool = SshPool::new();
    let exit = match pool.login(target, jumps, &Prompts::OnTerminal).await {
        Ok(text) => {
            crate::outln!(
                "sshmail: {}: logged in: {text}; no daemon runs for {}, so nothing holds the connection \
                 (start one: sshmail daemon)",
                account.name,
                path.display()
            );
            Exit::Delivered
        }
        Err(e) => {
            crate::errln!("sshmail: {}: {e}", account.name);
            e.exit()
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), pool.close_all()).await;
    exit
}
