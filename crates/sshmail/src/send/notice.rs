//! The notice of a message given up on after `sendmail` returned: refused
//! for good by the relay during a retry, or still not sent when it
//! expired. It goes into the sending account's own delivery target (its
//! Maildir, mbox, MDA or local SMTP/LMTP), never into the outbox, so a
//! notice can never cause another: there are no loops. It is delivered
//! once: the entry's state says `due` until the delivery is durable, then
//! `delivered` (a crash between the two can repeat it, the one duplicate).
//!
//! The notice is a MIME `multipart/mixed` message: what was refused, by
//! whom and why, in plain text, then the original as `message/rfc822`.
//! It is marked `Auto-Submitted: auto-replied` (RFC 3834), so that
//! vacation programs and filters do not answer it.

use std::io::Read as _;

use super::outbox::{Entry, Notice, Outbox};
use crate::config::Account;
use crate::deliver::{Sink, Staged};
use crate::error::{Error, Result};

/// Delivers the notice of `entry` (in `failed/`, its notice due) to
/// `account`'s delivery target and records it as delivered; a failure is
/// logged, and the notice stays due for the next pass.
pub async fn deliver(outbox: &Outbox, entry: &mut Entry, account: &Account) {
    if let Err(e) = try_deliver(outbox, entry, account).await {
        tracing::warn!(target: "sshmail::send", "{}: the notice could not be delivered yet: {e}", entry.id);
    }
}

async fn try_deliver(outbox: &Outbox, entry: &mut Entry, account: &Account) -> Result<()> {
    let staging = outbox.dir().join("notices");
    let sink = Sink::open(&account.delivery.to, &staging, &account.delivery.recipient, account.route.timeout)?;
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let kept = outbox.dir().join("failed").join(&entry.id);
    sink.deliver_one(|staged| compose(entry, &account.delivery.recipient, &host, &kept, staged)).await?;
    let mut state = entry.state.clone();
    state.notice = Notice::Delivered;
    outbox.record(entry, state)
}

/// Writes the notice of `entry` into `out`.
fn compose(entry: &Entry, to: &str, host: &str, kept: &std::path::Path, out: &mut Staged) -> Result<()> {
    let env = &entry.envelope;
    let why = entry.state.last_error.as_deref().unwrap_or("no reason was recorded");
    let boundary = format!("sshmail-notice-{}", entry.id);
    let date = chrono::Local::now().to_rfc2822();
    let refused = entry.pending();
    let sender = if env.sender.is_empty() { "<>" } else { env.sender.as_str() };
    let queued = chrono::DateTime::from_timestamp(env.queued as i64, 0)
        .map(|t| t.with_timezone(&chrono::Local).to_rfc2822())
        .unwrap_or_default();
    let mut head = format!(
        "From: Mail Delivery System <MAILER-DAEMON@{host}>\n\
         To: {to}\n\
         Subject: Undelivered mail: not sent to {}\n\
         Date: {date}\n\
         Message-ID: <notice.{}@{host}>\n\
         Auto-Submitted: auto-replied\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=\"{boundary}\"\n\
         \n\
         --{boundary}\n\
         Content-Type: text/plain; charset=utf-8\n\
         Content-Transfer-Encoding: 8bit\n\
         \n\
         sshmail gave up on the message below: it was not sent to\n\n",
        one_line(&refused.join(", ")),
        entry.id,
    );
    for r in &refused {
        head.push_str(&format!("    {}\n", one_line(r)));
    }
    head.push_str(&format!(
        "\nWhy: {}\n\n\
         It was queued at {queued} as {} (from {sender}, through account {}), and tried {} times.\n",
        one_line(why),
        entry.id,
        one_line(&env.account),
        entry.state.attempts,
    ));
    if !entry.state.accepted.is_empty() {
        head.push_str(&format!("It was sent to: {}.\n", one_line(&entry.state.accepted.join(", "))));
    }
    head.push_str(&format!(
        "\nIt is kept in {} until you remove it (sshmail queue remove {}).\n\n\
         --{boundary}\n\
         Content-Type: message/rfc822\n\
         Content-Disposition: attachment\n\
         \n",
        kept.display(),
        entry.id,
    ));
    out.write(head.as_bytes())?;
    let mut original = entry.message()?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut last = b'\n';
    loop {
        let n = original.read(&mut buf).map_err(|e| Error::Delivery(format!("outbox {}: {e}", entry.id)))?;
        if n == 0 {
            break;
        }
        out.write(&buf[..n])?;
        last = buf[n - 1];
    }
    let end = format!("{}\n--{boundary}--\n", if last == b'\n' { "" } else { "\n" });
    out.write(end.as_bytes())
}

/// `s` on one line: a hostile reply cannot add header fields or lines.
fn one_line(s: &str) -> String {
    crate::term::one_line(s, usize::MAX)
}
