//! Delivery through a mail delivery agent (procmail, maildrop, dovecot-lda):
//! the message on its stdin, exit 0 meaning delivered.
//!
//! The command is an argument vector, split from the configured text like a
//! shell would split words (quotes and backslashes), but never run by a
//! shell unless it says so (`sh -c '...'`). `%F` becomes the envelope sender
//! and `%T` the recipient; inside a `sh -c` script they are shell-quoted.

use std::io::Read as _;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;

use super::envelope;
use super::spool::Finished;
use crate::error::{Error, Result};
use crate::process::shell_quote;

/// EX_TEMPFAIL from sysexits.h.
pub const EX_TEMPFAIL: i32 = 75;

/// An MDA command.
#[derive(Debug, Clone)]
pub struct Mda {
    argv: Vec<String>,
    recipient: String,
    timeout: Duration,
}

/// Why one message was not delivered.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// Try again later (EX_TEMPFAIL, SMTP 4xx).
    Temporary(String),
    /// The sink refused it for good (other non-zero exit, SMTP 5xx).
    Permanent(String),
}

impl Refusal {
    /// The explanation.
    pub fn text(&self) -> &str {
        match self {
            Refusal::Temporary(t) | Refusal::Permanent(t) => t,
        }
    }
}

impl Mda {
    /// Parses the command text.
    pub fn new(command: &str, recipient: &str, timeout: Duration) -> Result<Mda> {
        let argv =
            split_words(command).ok_or_else(|| Error::Config(format!("mda: unbalanced quotes in {command:?}")))?;
        if argv.is_empty() {
            return Err(Error::Config("mda: empty command".into()));
        }
        Ok(Mda { argv, recipient: recipient.to_string(), timeout })
    }

    /// The argument vector for one message.
    pub fn argv_for(&self, sender: &str) -> Vec<String> {
        let shell = matches!(self.argv[0].as_str(), "sh" | "/bin/sh" | "bash" | "/bin/bash")
            && self.argv.get(1).is_some_and(|a| a == "-c");
        self.argv
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let quote = |v: &str| if shell && i == 2 { shell_quote(v) } else { v.to_string() };
                a.replace("%F", &quote(sender)).replace("%T", &quote(&self.recipient))
            })
            .collect()
    }

    /// Runs the MDA for one message.
    pub async fn deliver(&self, msg: &Finished) -> Result<Result<(), Refusal>> {
        let env = envelope::read(&msg.path).map_err(|e| Error::Delivery(format!("cannot read staged message: {e}")))?;
        let argv = self.argv_for(&env.sender);
        let mut child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::Delivery(format!("cannot run MDA {}: {e}", argv[0])))?;
        let mut stdin = child.stdin.take().expect("piped");
        let path = msg.path.clone();
        let feed = async move {
            let mut file = std::fs::File::open(&path)?;
            let mut buf = vec![0u8; 128 * 1024];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                stdin.write_all(&buf[..n]).await?;
            }
            stdin.shutdown().await
        };
        let run = async {
            // An MDA that stops reading early still gets a verdict from its
            // exit status; a broken pipe alone is not the answer.
            let fed = feed.await;
            let out = child.wait_with_output().await;
            (fed, out)
        };
        let (fed, out) = tokio::time::timeout(self.timeout * 10, run)
            .await
            .map_err(|_| Error::Delivery(format!("MDA {} did not finish", argv[0])))?;
        let out = out.map_err(|e| Error::Delivery(format!("MDA {}: {e}", argv[0])))?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let said = if stderr.is_empty() { String::new() } else { format!(": {stderr}") };
        match out.status.code() {
            Some(0) if fed.is_ok() => Ok(Ok(())),
            Some(0) => Ok(Err(Refusal::Temporary(format!(
                "MDA {} exited 0 without reading the whole message ({})",
                argv[0],
                fed.err().map(|e| e.to_string()).unwrap_or_default()
            )))),
            Some(EX_TEMPFAIL) => Ok(Err(Refusal::Temporary(format!("MDA {} exited 75 (try later){said}", argv[0])))),
            Some(c) => Ok(Err(Refusal::Permanent(format!("MDA {} exited {c}{said}", argv[0])))),
            None => Ok(Err(Refusal::Temporary(format!("MDA {} was killed by a signal{said}", argv[0])))),
        }
    }
}

/// Splits text into words like a POSIX shell (single quotes, double quotes,
/// backslash), without expanding anything. `None` on unbalanced quotes.
pub fn split_words(s: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        x => cur.push(x),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => {
                            let x = chars.next()?;
                            if !matches!(x, '"' | '\\' | '$' | '`') {
                                cur.push('\\');
                            }
                            cur.push(x);
                        }
                        x => cur.push(x),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.push(chars.next()?);
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Some(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_like_a_shell() {
        assert_eq!(split_words("procmail -d %T").unwrap(), ["procmail", "-d", "%T"]);
        assert_eq!(split_words(r#"sh -c 'cat > "$1"' x"#).unwrap(), ["sh", "-c", r#"cat > "$1""#, "x"]);
        assert_eq!(split_words(r#"a "b c" d\ e"#).unwrap(), ["a", "b c", "d e"]);
        assert_eq!(split_words("''").unwrap(), [""]);
        assert!(split_words("'open").is_none());
    }

    #[test]
    fn no_shell_unless_asked_expansions_are_quoted_in_scripts() {
        let m = Mda::new("maildrop -f %F -d %T", "me", Duration::from_secs(1)).unwrap();
        assert_eq!(m.argv_for("a b@x"), ["maildrop", "-f", "a b@x", "-d", "me"]);
        let m = Mda::new("sh -c 'deliver %F'", "me", Duration::from_secs(1)).unwrap();
        assert_eq!(m.argv_for("$(reboot)@x"), ["sh", "-c", "deliver '$(reboot)@x'"]);
    }
}
