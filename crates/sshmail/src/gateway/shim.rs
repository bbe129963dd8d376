//! The IMAP login shim, for clients that insist on logging in while the
//! server side is preauthenticated (`serve.imap_accept_login = true`).
//!
//! The server's `* PREAUTH` greeting goes to the client as `* OK`, so the
//! client believes it must log in; its `LOGIN` (literals included) or
//! `AUTHENTICATE PLAIN` / `LOGIN` is answered here with OK, whatever name
//! and password it gives: the endpoint's peer-uid check already
//! authorised the client, and the server's session is already
//! authenticated. Every other command goes to the server unaltered, and
//! once the login is answered the session passes through byte for byte.
//!
//! Until then, the server's responses are passed on whole lines at a time
//! (literals included), so that an answer from here never lands inside one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::sync::Mutex;

use super::Connected;
use crate::wire::Stream;

/// The longest command line read before the login (without literals).
const MAX_LINE: u64 = 64 * 1024;
/// The largest literal in a command before the login.
const MAX_LITERAL: u64 = 1 << 20;
/// How long a client may take to log in (a person typing a password the
/// client asks for included): a client that never does holds no channel.
const BEFORE_LOGIN: std::time::Duration = std::time::Duration::from_secs(300);

/// Runs a session through the shim; returns the bytes sent each way.
pub async fn run<C: Stream>(client: C, server: Connected) -> std::io::Result<(u64, u64)> {
    let (client_read, client_write) = tokio::io::split(client);
    let client_write = Arc::new(Mutex::new(client_write));
    let (server_read, mut server_write) = tokio::io::split(server.stream);
    let logged_in = Arc::new(AtomicBool::new(false));
    // What went up, also when the server ends the session first.
    let sent_up = AtomicU64::new(0);
    let sent_up = &sent_up;

    let greeting = as_ok(&server.greeting);
    client_write.lock().await.write_all(&greeting).await?;

    // Server to client: whole lines until the login is answered, then a copy.
    let down = {
        let (writer, logged_in) = (client_write.clone(), logged_in.clone());
        async move {
            let mut from = BufReader::new(server_read);
            let mut total = greeting.len() as u64;
            while !logged_in.load(Ordering::SeqCst) {
                // Wait for the server without holding the client's writer,
                // which an answer from here may need meanwhile.
                if from.fill_buf().await?.is_empty() {
                    let _ = writer.lock().await.shutdown().await;
                    return Ok(total);
                }
                let mut w = writer.lock().await;
                total += copy_line(&mut from, &mut *w).await?;
            }
            let mut w = writer.lock().await;
            total += tokio::io::copy(&mut from, &mut *w).await?;
            let _ = w.shutdown().await;
            Ok::<u64, std::io::Error>(total)
        }
    };

    // Client to server: commands read one by one until the login (for at
    // most BEFORE_LOGIN), then a copy.
    let up = {
        let (writer, logged_in) = (client_write.clone(), logged_in.clone());
        async move {
            let mut from = BufReader::new(client_read);
            match tokio::time::timeout(BEFORE_LOGIN, until_login(&mut from, &mut server_write, &*writer, sent_up)).await
            {
                Err(_) => {
                    let _ = answer(&*writer, "* BYE sshmail: no login within 300 s").await;
                }
                Ok(Err(e)) => return Err(e),
                // The client ended before it logged in.
                Ok(Ok(false)) => {}
                Ok(Ok(true)) => {
                    logged_in.store(true, Ordering::SeqCst);
                    super::copy(&mut from, &mut server_write, sent_up).await?;
                }
            }
            let _ = server_write.shutdown().await;
            Ok::<(), std::io::Error>(())
        }
    };
    // As for any session: the server's end ends it; after the client's,
    // the server has a while to finish.
    tokio::pin!(up, down);
    let down = tokio::select! {
        d = &mut down => d?,
        u = &mut up => {
            u?;
            tokio::time::timeout(super::AFTER_CLIENT_EOF, down).await.unwrap_or(Ok(0))?
        }
    };
    Ok((sent_up.load(Ordering::Relaxed), down))
}

/// The client's commands up to its login: LOGIN and AUTHENTICATE are
/// answered here, anything else goes to the server (literals and all),
/// counted in `sent`. True once the login is answered; false when the
/// client ended first.
async fn until_login<R, S, W>(
    from: &mut R,
    server: &mut S,
    writer: &Mutex<W>,
    sent: &AtomicU64,
) -> std::io::Result<bool>
where
    R: tokio::io::AsyncBufRead + Unpin,
    S: AsyncWrite + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let line = read_line(from).await?;
        if line.is_empty() {
            return Ok(false);
        }
        let (tag, command, rest) = words(&line);
        match command.to_ascii_uppercase().as_str() {
            "LOGIN" => {
                skip_literals(&line, from, writer).await?;
                answer(writer, &format!("{tag} OK LOGIN completed (sshmail: SSH authenticated you)")).await?;
                return Ok(true);
            }
            "AUTHENTICATE" => {
                let mut args = rest.split_whitespace();
                let mechanism = args.next().unwrap_or("").to_ascii_uppercase();
                let initial = args.next().is_some();
                let steps: &[&str] = match mechanism.as_str() {
                    "PLAIN" if initial => &[],
                    "PLAIN" => &[""],
                    "LOGIN" => &["VXNlcm5hbWU6", "UGFzc3dvcmQ6"],
                    _ => {
                        answer(writer, &format!("{tag} NO [CANNOT] only PLAIN and LOGIN are answered here")).await?;
                        continue;
                    }
                };
                let mut cancelled = false;
                for step in steps {
                    answer(writer, &format!("+ {step}")).await?;
                    let reply = read_line(from).await?;
                    if reply.is_empty() {
                        return Ok(false);
                    }
                    if reply.trim_ascii() == b"*" {
                        cancelled = true;
                        break;
                    }
                }
                if cancelled {
                    answer(writer, &format!("{tag} BAD AUTHENTICATE cancelled")).await?;
                    continue;
                }
                answer(writer, &format!("{tag} OK AUTHENTICATE completed (sshmail: SSH authenticated you)")).await?;
                return Ok(true);
            }
            _ => {
                // Anything else is the server's, literals and all.
                server.write_all(&line).await?;
                sent.fetch_add(line.len() as u64, Ordering::Relaxed);
                let mut line = line;
                while let Some((n, _)) = literal_at_end(&line) {
                    let mut literal = (&mut *from).take(n);
                    let copied = tokio::io::copy(&mut literal, server).await?;
                    sent.fetch_add(copied, Ordering::Relaxed);
                    line = read_line(from).await?;
                    server.write_all(&line).await?;
                    sent.fetch_add(line.len() as u64, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The greeting with `* PREAUTH` made `* OK`, its response code kept
/// (capabilities), its text replaced.
fn as_ok(greeting: &[u8]) -> Vec<u8> {
    let end = greeting.iter().position(|&b| b == b'\n').map_or(greeting.len(), |p| p + 1);
    let line = String::from_utf8_lossy(&greeting[..end]);
    let after = line.get("* PREAUTH".len()..).unwrap_or("").trim();
    let code = match after.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((code, _)) => format!("[{code}] "),
        None => String::new(),
    };
    let mut out = format!("* OK {code}sshmail gateway ready: log in with any name and password\r\n").into_bytes();
    out.extend_from_slice(&greeting[end..]);
    out
}

/// Writes one line of our own to the client.
async fn answer<W: AsyncWrite + Unpin>(writer: &Mutex<W>, line: &str) -> std::io::Result<()> {
    let mut w = writer.lock().await;
    w.write_all(line.as_bytes()).await?;
    w.write_all(b"\r\n").await?;
    w.flush().await
}

/// One line, its line end included; empty at the end of input.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(from: &mut R) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    (&mut *from).take(MAX_LINE).read_until(b'\n', &mut line).await?;
    if !line.is_empty() && !line.ends_with(b"\n") && line.len() as u64 >= MAX_LINE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a command line longer than 64 KiB before the login",
        ));
    }
    Ok(line)
}

/// `{N}` or `{N+}` at the end of a line: N, and whether it is `+`.
fn literal_at_end(line: &[u8]) -> Option<(u64, bool)> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[open + 1..];
    let (digits, plus) = match digits.strip_suffix(b"+") {
        Some(d) => (d, true),
        None => (digits, false),
    };
    let n = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((n, plus))
}

/// Reads past the literals of a LOGIN (asking for each synchronizing one
/// with a continuation, as a server would).
async fn skip_literals<R, W>(first: &[u8], from: &mut R, writer: &Mutex<W>) -> std::io::Result<()>
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut line = first.to_vec();
    while let Some((n, plus)) = literal_at_end(&line) {
        if n > MAX_LITERAL {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "a LOGIN literal larger than 1 MiB"));
        }
        if !plus {
            answer(writer, "+ go on").await?;
        }
        tokio::io::copy(&mut (&mut *from).take(n), &mut tokio::io::sink()).await?;
        line = read_line(from).await?;
    }
    Ok(())
}

/// Copies one response line from the server, with its literals, to `to`;
/// returns the bytes copied (0 at the end of input).
async fn copy_line<R, W>(from: &mut R, to: &mut W) -> std::io::Result<u64>
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut total = 0;
    loop {
        let mut line = Vec::new();
        (&mut *from).take(MAX_LINE).read_until(b'\n', &mut line).await?;
        if line.is_empty() {
            return Ok(total);
        }
        to.write_all(&line).await?;
        total += line.len() as u64;
        if !line.ends_with(b"\n") {
            // A very long line: the rest of it next.
            continue;
        }
        match literal_at_end(&line) {
            Some((n, _)) => total += tokio::io::copy(&mut (&mut *from).take(n), to).await?,
            None => {
                to.flush().await?;
                return Ok(total);
            }
        }
    }
}

/// The tag, the command and the rest of a command line.
fn words(line: &[u8]) -> (String, String, String) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches(['\r', '\n']);
    let mut parts = text.splitn(3, ' ');
    let tag = parts.next().unwrap_or("*").to_string();
    let command = parts.next().unwrap_or("").to_string();
    let rest = parts.next().unwrap_or("").to_string();
    (tag, command, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preauth_becomes_ok_with_its_capabilities() {
        let g = as_ok(b"* PREAUTH [CAPABILITY IMAP4rev1 IDLE] Logged in as me\r\n");
        assert_eq!(g, b"* OK [CAPABILITY IMAP4rev1 IDLE] sshmail gateway ready: log in with any name and password\r\n");
        assert!(as_ok(b"* PREAUTH hello\r\n").starts_with(b"* OK sshmail"));
    }

    #[test]
    fn literals_at_line_ends() {
        assert_eq!(literal_at_end(b"a LOGIN {4}\r\n"), Some((4, false)));
        assert_eq!(literal_at_end(b"a LOGIN me {12+}\r\n"), Some((12, true)));
        assert_eq!(literal_at_end(b"a LOGIN me pw\r\n"), None);
        assert_eq!(literal_at_end(b"a LOGIN {x}\r\n"), None);
    }
}
