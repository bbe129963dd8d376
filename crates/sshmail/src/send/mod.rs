//! `sshmail sendmail`: a sendmail-compatible relay through SSH, with a
//! durable outbox.
//!
//! The message and its envelope are queued ([`outbox`], fsync'd) before any
//! network work; then `sendmail` tries to relay it at once, by itself,
//! within a bounded wait. Exit 0 means "durably queued or delivered", as
//! with sendmail; a link that is down, or a 4xx, leaves it queued (a note
//! on stderr, exit 0; `--no-queue`: exit 75 and nothing kept). A
//! permanent refusal during the command itself exits 69 with the relay's
//! text, and the entry moves to `outbox/failed`. `sshmail queue` lists the
//! outbox, `queue flush` tries everything queued now, `queue remove ID`
//! drops one.
//!
//! Which account sends: `--account`, else the one whose `send.from` holds
//! the envelope sender (`-f`), else the one holding the `From:` address,
//! else the one marked `send.default = true`, else the only account with a
//! `send` table.

pub mod args;
pub mod notice;
pub mod outbox;
pub mod relay;

use std::io::Read as _;
use std::path::Path;
use std::time::Duration;

use crate::config::{self, Account, Relay};
use crate::error::{Error, Result};
use crate::ssh::SshPool;
use crate::transport;
use args::{Args, Mode};
use outbox::{Entry, Envelope, Outbox};

/// sysexits(3), the codes sendmail's callers understand.
pub mod sysexits {
    /// Queued or delivered.
    pub const OK: i32 = 0;
    /// Bad command line.
    pub const USAGE: i32 = 64;
    /// The message could not be read.
    pub const DATAERR: i32 = 65;
    /// A recipient or the message was refused for good.
    pub const UNAVAILABLE: i32 = 69;
    /// Try again later (nothing was accepted).
    pub const TEMPFAIL: i32 = 75;
    /// The configuration is wrong.
    pub const CONFIG: i32 = 78;
}

/// How long `sendmail` tries to relay before it leaves the message queued.
const RELAY_NOW: Duration = Duration::from_secs(60);
/// How much longer than [`RELAY_NOW`] a daemon relaying for `sendmail`
/// may take to answer.
const DAEMON_MARGIN: Duration = Duration::from_secs(10);
/// The first pause after a failed try; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_secs(60);
const MAX_PAUSE: Duration = Duration::from_secs(3600);

/// Runs `sendmail ARGS` (or `mailq` when `list`); returns the exit code.
pub async fn sendmail(raw_args: &[String], list: bool) -> i32 {
    let mut args = match args::parse(raw_args) {
        Ok(a) => a,
        Err(e) => {
            crate::errln!("sendmail: {e}");
            return sysexits::USAGE;
        }
    };
    if list {
        args.mode = Mode::List;
    }
    let outbox = match Outbox::open(&Outbox::default_dir()) {
        Ok(o) => o,
        Err(e) => {
            crate::errln!("sendmail: {e}");
            return sysexits::TEMPFAIL;
        }
    };
    match args.mode {
        Mode::List => list_queue(&outbox),
        Mode::Flush => flush(&outbox, args.config.as_deref()).await,
        Mode::Send => submit(&outbox, &args).await,
    }
}

/// The accounts that can send, from the config file; one that does not
/// resolve is a config error.
fn senders(config_file: Option<&Path>) -> Result<Vec<Account>> {
    config::Config::load(config_file, &config::Overrides::default())?.senders()
}

/// The account that sends a message: `--account`; else the one whose
/// `send.from` lists the envelope sender (`-f`), else the one listing the
/// `From:` address, else the one marked `send.default`, else the only one.
fn choose<'a>(
    accounts: &'a [Account],
    wanted: Option<&str>,
    envelope_sender: Option<&str>,
    header_from: Option<&str>,
) -> std::result::Result<&'a Account, String> {
    if let Some(w) = wanted {
        return accounts
            .iter()
            .find(|a| a.name == w)
            .ok_or_else(|| format!("no account {w} with a `send` table in the config"));
    }
    let listing = |address: Option<&str>| {
        let address = address?.to_ascii_lowercase();
        accounts.iter().find(|a| a.send.as_ref().is_some_and(|t| t.from.contains(&address)))
    };
    if let Some(found) = listing(envelope_sender).or_else(|| listing(header_from)) {
        return Ok(found);
    }
    let defaults: Vec<_> = accounts.iter().filter(|a| a.send.as_ref().is_some_and(|t| t.default)).collect();
    match (accounts, defaults.as_slice()) {
        ([], _) => Err("no account has a `send` table; add one (see `man sshmail`)".into()),
        (_, [one]) => Ok(one),
        ([only], []) => Ok(only),
        (_, []) => {
            let mut tried = Vec::new();
            if let Some(s) = envelope_sender {
                tried.push(format!("the sender -f {s}"));
            }
            if let Some(f) = header_from {
                tried.push(format!("the From: address {f}"));
            }
            let tried = if tried.is_empty() { "no sender was given".to_string() } else { tried.join(" and ") };
            Err(format!(
                "several accounts can send: {tried} in no account's send.from, and no account has send.default = \
                 true; give --account NAME, list the address in one account's send.from, or mark one account \
                 send.default = true"
            ))
        }
        (_, many) => Err(format!(
            "accounts {} all have send.default = true; keep it on one",
            many.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Queues the message on stdin, then tries to relay it now.
async fn submit(outbox: &Outbox, args: &Args) -> i32 {
    let accounts = match senders(args.config.as_deref()) {
        Ok(a) => a,
        Err(e) => {
            crate::errln!("sendmail: {e}");
            return sysexits::CONFIG;
        }
    };
    // The header first: -t recipients, the From: for a sender.
    use std::io::IsTerminal as _;
    let how = crate::message::Reading { ignore_dots: args.ignore_dots, terminal: std::io::stdin().is_terminal() };
    let mut input = std::io::BufReader::with_capacity(64 * 1024, std::io::stdin().lock());
    let header = match crate::message::Header::read(&mut input, how) {
        Ok(h) => h,
        Err(e) => {
            crate::errln!("sendmail: cannot read the message: {e}");
            return sysexits::DATAERR;
        }
    };
    let header_from = header.addresses("from").into_iter().next();
    let chosen = choose(&accounts, args.account.as_deref(), args.sender.as_deref(), header_from.as_deref());
    let account = match chosen {
        Ok(a) => a,
        Err(e) => {
            crate::errln!("sendmail: {e}");
            return sysexits::CONFIG;
        }
    };
    let send = account.send.as_ref().expect("a sending account");
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let sender = args
        .sender
        .clone()
        .or_else(|| send.from.first().cloned())
        .or(header_from)
        .unwrap_or_else(|| format!("{}@{host}", account.login.user));
    // `-f '<>'`: a bounce, with the null sender.
    let sender = if sender == "<>" { String::new() } else { sender };
    let mut recipients = args.recipients.clone();
    if args.extract {
        for field in ["to", "cc", "bcc"] {
            recipients.extend(header.addresses(field));
        }
    }
    let mut seen = std::collections::HashSet::new();
    recipients.retain(|r| seen.insert(r.to_ascii_lowercase()));
    if recipients.is_empty() {
        crate::errln!("sendmail: no recipients (give them as arguments, or -t to take them from the header)");
        return sysexits::USAGE;
    }
    let sender_shown = (!sender.is_empty()).then_some(&sender);
    if let Some(bad) = recipients.iter().chain(sender_shown).find(|a| !crate::message::valid_address(a)) {
        crate::errln!("sendmail: {bad:?} is not an address that can be relayed (no spaces, control characters or <>)");
        return sysexits::USAGE;
    }
    let envelope = Envelope {
        version: outbox::VERSION,
        sender: sender.clone(),
        recipients,
        account: account.name.clone(),
        queued: outbox::now(),
    };
    let message_id = format!("{}.{}@{host}", outbox::now(), std::process::id());
    let head = header.rewrite(&sender, args.full_name.as_deref(), &message_id);
    let ended = header.ended();
    let mut body = crate::message::Body::new(&mut input, how, ended);
    let mut whole = head.as_slice().chain(&mut body);
    let mut entry = match outbox.add(&envelope, &mut whole) {
        Ok(e) => e,
        Err(e) => {
            crate::errln!("sendmail: the message was not accepted: {e}");
            return sysexits::TEMPFAIL;
        }
    };
    // Queued: from here on, exit 0 unless refused for good now. A running
    // daemon relays it on its connection (no new SSH handshake).
    if let Some(done) = relay_by_daemon(args.config.as_deref(), &entry.id).await {
        return match done {
            Attempt::Done => sysexits::OK,
            Attempt::Failed(why) => {
                crate::errln!("sendmail: {why}");
                sysexits::UNAVAILABLE
            }
            Attempt::Later(why) => {
                // The daemon keeps it and tries again.
                if let Some(e) = outbox.get(&entry.id) {
                    entry = e;
                }
                later(outbox, &entry, args, &why)
            }
        };
    }
    let Some(claim) = outbox.claim(&entry) else { return sysexits::OK };
    let pool = SshPool::new();
    let tried = tokio::time::timeout(RELAY_NOW, attempt(outbox, &mut entry, account, &pool, Waiting::Sender)).await;
    drop(claim);
    let _ = tokio::time::timeout(Duration::from_secs(1), pool.close_all()).await;
    match tried {
        Ok(Ok(Attempt::Done)) => sysexits::OK,
        Ok(Ok(Attempt::Failed(why))) => {
            crate::errln!("sendmail: {why}");
            sysexits::UNAVAILABLE
        }
        Ok(Ok(Attempt::Later(why))) | Ok(Err(Error::Delivery(why))) => later(outbox, &entry, args, &why),
        Ok(Err(e)) => later(outbox, &entry, args, &e.to_string()),
        Err(_) => later(outbox, &entry, args, "the relay did not finish within 60 s"),
    }
}

/// Not relayed now: queued (exit 0), or with `--no-queue` dropped (75).
fn later(outbox: &Outbox, entry: &Entry, args: &Args, why: &str) -> i32 {
    if args.no_queue && entry.state.accepted.is_empty() {
        let _ = outbox.remove(&entry.id);
        crate::errln!("sendmail: not sent, and not queued (--no-queue): {why}");
        return sysexits::TEMPFAIL;
    }
    crate::errln!("sendmail: queued as {} and tried again later (sshmail queue flush, or the daemon): {why}", entry.id);
    sysexits::OK
}

pub use crate::control::Attempt;

/// Asks the daemon of the config file `config` to relay the queued entry
/// `id` now on its own SSH connections; None when no daemon answers or it
/// cannot take the entry, so the caller relays it.
async fn relay_by_daemon(config: Option<&Path>, id: &str) -> Option<Attempt> {
    use crate::control::{Command, NoAnswer, Response};
    let paths = crate::control::Paths::of(config);
    match crate::control::ask(&paths, Command::Send { id: id.to_string() }, RELAY_NOW + DAEMON_MARGIN).await {
        Ok(Response::Sent { attempt }) => Some(attempt),
        Err(NoAnswer::Unsafe(why)) => {
            crate::errln!("sendmail: {why}; relaying without the daemon");
            None
        }
        _ => None,
    }
}

/// Who waits for a try's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// The user's `sendmail`, which reports a refusal itself (exit 69).
    Sender,
    /// Nobody (the daemon's retries, `queue flush`): a message given up on
    /// gets a notice in the user's mailbox.
    Nobody,
}

/// One try of `entry`, recorded in the outbox (the caller holds its claim).
/// A message still not sent `send.expire` after it was queued is given up.
pub async fn attempt(
    outbox: &Outbox,
    entry: &mut Entry,
    account: &Account,
    pool: &SshPool,
    waiting: Waiting,
) -> Result<Attempt> {
    let send = account.send.as_ref().ok_or_else(|| Error::Config(format!("account {} cannot send", account.name)))?;
    let mut state = entry.state.clone();
    state.attempts += 1;
    let (verdict, link_error) = match relay_once(entry, account, send, pool).await {
        Ok(v) => (v, None),
        Err(e) => (relay::Verdict::default(), Some(e.to_string())),
    };
    state.accepted.extend(verdict.accepted.iter().cloned());
    if link_error.is_none() {
        state.uncertain = verdict.uncertain;
    }
    let mut refused: Vec<String> = summarize(&verdict.permanent).into_iter().collect();
    let done = entry.envelope.recipients.iter().all(|r| state.accepted.contains(r));
    let why_later = link_error.clone().unwrap_or_else(|| summarize(&verdict.temporary).unwrap_or_default());
    let age = outbox::now().saturating_sub(entry.envelope.queued);
    if refused.is_empty() && !done && age >= send.expire.as_secs() {
        let days = send.expire.as_secs() / 86_400;
        refused.push(format!("not sent within {days} days (send.expire_days); the last try: {why_later}"));
    }
    if !refused.is_empty() {
        // Sent to those who took it; the rest refused it for good.
        let why = refused.join("; ");
        if waiting == Waiting::Nobody {
            state.notice = outbox::Notice::Due;
        }
        outbox.record(entry, state)?;
        outbox.fail(entry, &why)?;
        if waiting == Waiting::Nobody {
            notice::deliver(outbox, entry, account).await;
        }
        return Ok(Attempt::Failed(why));
    }
    if done {
        crate::fault::point("relay-accepted");
        let told = account.hooks.on_sent.as_ref().map(|command| {
            let summary = entry.message().map(crate::news::Summary::of_reader).unwrap_or_default();
            let sent = crate::news::Sent {
                account: account.name.clone(),
                id: entry.id.clone(),
                sender: entry.envelope.sender.clone(),
                recipients: entry.envelope.recipients.clone(),
                summary,
                size: entry.size,
            };
            crate::news::hook::Run::sent(account, command.clone(), &sent)
        });
        outbox.done(entry)?;
        if let Some(run) = told {
            crate::news::hook::spawn(run);
        }
        return Ok(Attempt::Done);
    }
    state.last_error = Some(why_later.clone());
    state.next_try = Some(outbox::now() + pause_after(state.attempts));
    state.link_down = link_error.is_some();
    outbox.record(entry, state)?;
    Ok(Attempt::Later(why_later))
}

/// Recipients and why, grouped by reason, each group naming at most three
/// recipients and how many more: an error line stays short whatever the
/// number of recipients (None when there are none).
fn summarize(refusals: &[(String, String)]) -> Option<String> {
    let mut reasons: Vec<(&str, Vec<&str>)> = Vec::new();
    for (r, why) in refusals {
        match reasons.iter_mut().find(|(w, _)| *w == why.as_str()) {
            Some((_, rs)) => rs.push(r),
            None => reasons.push((why, vec![r])),
        }
    }
    let groups: Vec<String> = reasons
        .into_iter()
        .map(|(why, rs)| {
            let named = rs.iter().take(3).copied().collect::<Vec<_>>().join(", ");
            match rs.len() {
                n if n > 3 => format!("{named} and {} more: {why}", n - 3),
                _ => format!("{named}: {why}"),
            }
        })
        .collect();
    (!groups.is_empty()).then(|| groups.join("; "))
}

/// Delivers the notices still due for failed entries (one that could not
/// be delivered when its message was given up on), with the accounts `find`
/// knows.
pub async fn deliver_notices(outbox: &Outbox, find: impl Fn(&str) -> Option<std::sync::Arc<Account>>) {
    let Ok((failed, _)) = outbox.failed() else { return };
    for mut e in failed.into_iter().filter(|e| e.state.notice == outbox::Notice::Due) {
        let Some(account) = find(&e.envelope.account) else { continue };
        notice::deliver(outbox, &mut e, &account).await;
    }
}

/// Seconds to wait after the `attempts`th failed try: 1 min doubling to 1 h.
fn pause_after(attempts: u32) -> u64 {
    crate::backoff::Backoff::new(FIRST_PAUSE, MAX_PAUSE, 0.0).nth(attempts).as_secs()
}

/// An SMTP session with `account`'s relay at `host:port` through its SSH
/// host, set up as `send` says (STARTTLS, AUTH): the relay's and the
/// doctor's one way in.
pub async fn relay_session(
    account: &Account,
    send: &config::Send,
    host: &str,
    port: u16,
    pool: &SshPool,
) -> Result<relay::Session> {
    let route = &account.route;
    let opened = transport::open(&route.forward_to(host, port), pool).await?;
    let auth = match &send.user {
        Some(user) => {
            let pw = crate::process::password(&send.password, "send.password_command", route.timeout)
                .await?
                .ok_or_else(|| Error::Config("send.user is set but no send.password_command".into()))?;
            Some((user.clone(), pw))
        }
        None => None,
    };
    let tls = relay::Tls { host, when: send.starttls, settings: &send.tls };
    relay::Session::open(opened.stream, &opened.peer, auth, tls, route.timeout).await
}

/// Opens the way to the relay and hands the message over once.
async fn relay_once(entry: &Entry, account: &Account, send: &config::Send, pool: &SshPool) -> Result<relay::Verdict> {
    let route = &account.route;
    match &send.relay {
        Relay::Smtp(host, port) => {
            let session = relay_session(account, send, host, *port, pool).await?;
            relay::smtp(session, entry).await
        }
        Relay::Exec(command) => {
            let Some((target, jumps)) = &route.ssh else {
                return Err(Error::Config(format!("account {} has no SSH destination", account.name)));
            };
            let mut prefix = transport::remote_command(command);
            prefix.push_str(" -f ");
            prefix.push_str(&crate::process::shell_quote(&entry.envelope.sender));
            prefix.push_str(" --");
            let mut verdict = relay::Verdict::default();
            for (i, batch) in exec_batches(&prefix, entry.pending()).into_iter().enumerate() {
                let line = batch.iter().fold(prefix.clone(), |mut line, r| {
                    line.push(' ');
                    line.push_str(&crate::process::shell_quote(r));
                    line
                });
                let tried = match pool.exec(target, jumps, &line).await {
                    Ok((stream, status, _)) => {
                        relay::exec(Box::new(stream), &status, entry, batch.clone(), route.timeout).await
                    }
                    Err(e) => Err(e),
                };
                match tried {
                    Ok(v) => verdict.merge(v),
                    // The first batch: nothing taken yet, the link is down, as for SMTP.
                    Err(e) if i == 0 => return Err(e),
                    // Some batches went: keep what they got, try the rest later.
                    Err(e) => verdict.merge(relay::Verdict::all(&batch, &e.to_string(), false)),
                }
            }
            Ok(verdict)
        }
    }
}

/// The longest remote command line sent: a shell takes its `-c` text as one
/// argument, which Linux caps at 128 KiB, and other systems lower; recipients
/// go in batches (each a run of the command) below this.
const MAX_REMOTE_LINE: usize = 32 * 1024;

/// Splits `rcpts` into batches whose command line, after `prefix`, stays
/// within [`MAX_REMOTE_LINE`] (one recipient always makes a batch).
fn exec_batches(prefix: &str, rcpts: Vec<String>) -> Vec<Vec<String>> {
    let mut batches: Vec<Vec<String>> = Vec::new();
    let mut length = prefix.len();
    for r in rcpts {
        let more = 1 + crate::process::shell_quote(&r).len();
        match batches.last_mut() {
            Some(batch) if length + more <= MAX_REMOTE_LINE => batch.push(r),
            _ => {
                length = prefix.len();
                batches.push(vec![r]);
            }
        }
        length += more;
    }
    batches
}

/// The daemon's side: relays the queued entry `id` with `account`'s route on
/// `pool` (None: no such entry, or someone else is relaying it).
pub async fn relay_queued(
    outbox: &Outbox,
    id: &str,
    find: impl Fn(&str) -> Option<std::sync::Arc<Account>>,
    pool: &SshPool,
    waiting: Waiting,
) -> Option<Attempt> {
    let mut entry = outbox.get(id)?;
    let account = find(&entry.envelope.account)?;
    let claim = outbox.claim(&entry)?;
    let result = tokio::time::timeout(RELAY_NOW, attempt(outbox, &mut entry, &account, pool, waiting)).await;
    drop(claim);
    Some(match result {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => Attempt::Later(e.to_string()),
        Err(_) => Attempt::Later("the relay did not finish within 60 s".into()),
    })
}

/// Which queued entries the daemon tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// Those whose back-off is over.
    Due,
    /// Those, and those whose last try found the link down (a connection
    /// came back).
    DueOrWaitingForLink,
    /// Every one (`sshmail poll`).
    All,
}

/// The daemon's side: tries the queued entries `which` says, one after
/// another. Returns how many were tried.
pub async fn relay_due(
    outbox: &Outbox,
    find: impl Fn(&str) -> Option<std::sync::Arc<Account>>,
    pool: &SshPool,
    which: Which,
) -> Vec<(String, Attempt)> {
    let Ok((queued, _)) = outbox.queued() else { return Vec::new() };
    let now = outbox::now();
    let chosen = |e: &&Entry| match which {
        Which::All => true,
        Which::Due => e.state.next_try.is_none_or(|t| t <= now),
        Which::DueOrWaitingForLink => e.state.link_down || e.state.next_try.is_none_or(|t| t <= now),
    };
    let mut tried = Vec::new();
    for e in queued.iter().filter(chosen) {
        if which == Which::DueOrWaitingForLink && e.state.link_down {
            tracing::info!(target: "sshmail::send", "{}: a connection came back: trying it now", e.id);
        }
        let Some(attempt) = relay_queued(outbox, &e.id, &find, pool, Waiting::Nobody).await else { continue };
        match &attempt {
            Attempt::Done => tracing::info!(target: "sshmail::send", "{}: sent", e.id),
            Attempt::Failed(why) => {
                tracing::warn!(target: "sshmail::send", "{}: refused for good, moved to failed: {why}", e.id)
            }
            Attempt::Later(why) => tracing::info!(target: "sshmail::send", "{}: still queued: {why}", e.id),
        }
        tried.push((e.id.clone(), attempt));
    }
    tried
}

/// `sshmail queue flush` / `sendmail -q`: tries every queued entry now.
pub async fn flush(outbox: &Outbox, config_file: Option<&Path>) -> i32 {
    let accounts = match senders(config_file) {
        Ok(a) => a,
        Err(e) => {
            crate::errln!("sshmail: {e}");
            return sysexits::CONFIG;
        }
    };
    let (entries, unreadable) = match outbox.queued() {
        Ok(q) => q,
        Err(e) => {
            crate::errln!("sshmail: {e}");
            return sysexits::TEMPFAIL;
        }
    };
    for u in &unreadable {
        crate::errln!("sshmail: outbox entry {} skipped: {}", u.id, u.why);
    }
    let pool = SshPool::new();
    let mut code = sysexits::OK;
    for mut entry in entries {
        let Some(claim) = outbox.claim(&entry) else { continue };
        let Some(account) = accounts.iter().find(|a| a.name == entry.envelope.account) else {
            crate::errln!(
                "sshmail: {}: its account {} can no longer send; left queued",
                entry.id,
                entry.envelope.account
            );
            code = sysexits::CONFIG;
            continue;
        };
        match tokio::time::timeout(RELAY_NOW, attempt(outbox, &mut entry, account, &pool, Waiting::Nobody)).await {
            Ok(Ok(Attempt::Done)) => crate::outln!("{}: sent", entry.id),
            Ok(Ok(Attempt::Failed(why))) => {
                crate::outln!("{}: refused, moved to failed: {why}", entry.id);
                code = code.max(sysexits::UNAVAILABLE);
            }
            Ok(Ok(Attempt::Later(why))) => {
                crate::outln!("{}: still queued: {why}", entry.id);
                code = code.max(sysexits::TEMPFAIL);
            }
            Ok(Err(e)) => {
                crate::outln!("{}: still queued: {e}", entry.id);
                code = code.max(sysexits::TEMPFAIL);
            }
            Err(_) => {
                crate::outln!("{}: still queued: the relay did not finish within 60 s", entry.id);
                code = code.max(sysexits::TEMPFAIL);
            }
        }
        drop(claim);
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), pool.close_all()).await;
    let find = |name: &str| {
        let a = accounts.iter().find(|a| a.name == name)?;
        Some(std::sync::Arc::new(a.clone()))
    };
    deliver_notices(outbox, find).await;
    code
}

/// `sshmail queue` / `mailq`: the outbox, queued and failed.
pub fn list_queue(outbox: &Outbox) -> i32 {
    let (queued, bad) = match outbox.queued() {
        Ok(q) => q,
        Err(e) => {
            crate::errln!("sshmail: {e}");
            return sysexits::TEMPFAIL;
        }
    };
    let (failed, bad_failed) = outbox.failed().unwrap_or_default();
    if queued.is_empty() && failed.is_empty() && bad.is_empty() {
        crate::outln!("the outbox is empty ({})", outbox.dir().display());
        return sysexits::OK;
    }
    let show = |e: &Entry, what: &str| {
        let when = chrono::DateTime::from_timestamp(e.envelope.queued as i64, 0)
            .map(|t| t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_default();
        crate::outln!(
            "{}  {what}  {when}  {} bytes  via {}  <{}> -> {}",
            e.id,
            e.size,
            e.envelope.account,
            e.envelope.sender,
            e.pending().join(", ")
        );
        if e.state.attempts > 0 || e.state.last_error.is_some() {
            let next = e
                .state
                .next_try
                .and_then(|t| chrono::DateTime::from_timestamp(t as i64, 0))
                .map(|t| format!(", next try {}", t.with_timezone(&chrono::Local).format("%H:%M")))
                .unwrap_or_default();
            let notice = match e.state.notice {
                outbox::Notice::None => "",
                outbox::Notice::Due => ", notice due",
                outbox::Notice::Delivered => ", notice delivered",
            };
            crate::outln!(
                "    {} tries{next}{}{notice}: {}",
                e.state.attempts,
                if e.state.uncertain { ", uncertain (the relay may have it already)" } else { "" },
                e.state.last_error.as_deref().unwrap_or("")
            );
        }
    };
    for e in &queued {
        show(e, "queued");
    }
    for e in &failed {
        show(e, "FAILED");
    }
    for u in bad.iter().chain(&bad_failed) {
        crate::outln!("{}  unreadable: {}", u.id, u.why);
    }
    sysexits::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: 10 000 recipients went on one remote command line, which
    /// the remote side could not run ("Argument list too long"), and that
    /// was taken as a refusal of all of them, with a 700 KB error.
    #[test]
    fn regression_exec_recipients_go_in_batches_below_the_remote_limit_and_errors_stay_short() {
        let rcpts: Vec<String> = (0..10_000).map(|i| format!("someone.{i}@example.org")).collect();
        let prefix = "/usr/sbin/sendmail -oi -f me@example.org --";
        let batches = exec_batches(prefix, rcpts.clone());
        assert!(batches.len() > 1);
        for b in &batches {
            let line: usize = prefix.len() + b.iter().map(|r| 1 + crate::process::shell_quote(r).len()).sum::<usize>();
            assert!(line <= MAX_REMOTE_LINE, "{line}");
        }
        assert_eq!(batches.concat(), rcpts, "every recipient once, in order");
        let refused: Vec<(String, String)> = rcpts.iter().map(|r| (r.clone(), "exit 1".to_string())).collect();
        let text = summarize(&refused).unwrap();
        assert!(text.len() < 200 && text.contains("and 9997 more: exit 1"), "{text}");
        assert_eq!(summarize(&[]), None);
    }

    #[test]
    fn retries_back_off_from_a_minute_doubling_to_an_hour() {
        let pauses: Vec<u64> = [1, 2, 3, 6, 7, 8, 1000].into_iter().map(pause_after).collect();
        assert_eq!(pauses, [60, 120, 240, 1920, 3600, 3600, 3600]);
    }
}
