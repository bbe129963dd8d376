//! IMAP client session: the I/O loop around [`sshmail_proto::imap`].
//!
//! Responses are read through the streaming [`ResponseReader`]; a FETCH body
//! goes straight from the wire into a Maildir staging file, CRLF turned into
//! LF on the way, so memory does not grow with message size.

use std::time::Duration;

use sshmail_proto::imap::{
    Code, Command, Event, Fetch, Greeting, Limits, Response, ResponseReader, Status, Tagger, Untagged, Value, uid_set,
    utf7,
};
use sshmail_proto::line::CrlfToLf;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;

use crate::config::AuthMethod;
use crate::deliver::{Finished, Spool, Staged};
use crate::error::{Error, Result};
use crate::fetch::Trace;
use crate::fetch::fingerprint::{self, HeaderHash};
use crate::secret::Secret;
use crate::wire::Wire;

/// Most folders a LIST may name.
const MAX_FOLDERS: usize = 100_000;
/// Most messages in one folder.
pub const MAX_FOLDER_MESSAGES: usize = 1_000_000;
/// Untagged responses a command may bring that we have no use for, and
/// their bytes: a server that floods us gets an error, not our memory.
const MAX_UNSOLICITED: usize = 100_000;
const MAX_UNSOLICITED_BYTES: u64 = 64 << 20;
/// UIDs per `BODY.PEEK[HEADER]` command (a command line stays short).
const HEADER_GROUP: usize = 500;

/// Counts what a server sends that nobody asked for, per command.
#[derive(Debug, Default)]
pub struct Unsolicited {
    count: usize,
    bytes: u64,
}

impl Unsolicited {
    /// One more response of `bytes`; an error once over the bounds.
    pub fn add(&mut self, peer: &str, what: &str, bytes: u64) -> Result<()> {
        self.count += 1;
        self.bytes += bytes;
        if self.count > MAX_UNSOLICITED || self.bytes > MAX_UNSOLICITED_BYTES {
            return Err(Error::Protocol(format!(
                "{peer}: flooded with {} untagged responses ({} bytes) nobody asked for during {what}; giving up",
                self.count, self.bytes
            )));
        }
        Ok(())
    }

    /// A command completed: a fresh count for the next.
    pub fn reset(&mut self) {
        *self = Unsolicited::default();
    }
}

/// One message of a folder, as the scan saw it.
#[derive(Debug, Clone, Copy)]
pub struct Listed {
    /// UID.
    pub uid: u32,
    /// RFC822.SIZE, if given.
    pub size: Option<u64>,
    /// Flagged \Seen.
    pub seen: bool,
    /// Flagged \Deleted.
    pub deleted: bool,
}

/// What a response read during a command is.
enum Step {
    /// The command's completion, OK.
    Done(Done),
    /// Something else.
    Other(Response),
}

/// A tagged completion.
#[derive(Debug, Clone)]
pub struct Done {
    /// OK, NO or BAD.
    pub status: Status,
    /// Response code.
    pub code: Option<Code>,
    /// Text.
    pub text: String,
}

/// Where FETCH bodies go while a response is read.
pub struct Bodies<'m> {
    spool: Option<&'m Spool>,
    trace: Option<Trace>,
    current: Option<Staged>,
    /// The header hash of the body being read, when bodies are hashed.
    header: Option<HeaderHash>,
    hashing: bool,
    crlf: CrlfToLf,
    buf: Vec<u8>,
    /// A body that is complete and waits for its FETCH response to say
    /// which UID it belongs to.
    pub done: Option<Finished>,
    /// The header hash of the last complete body.
    pub done_header: Option<String>,
}

impl<'m> Bodies<'m> {
    /// Bodies are thrown away (no FETCH of bodies expected).
    pub fn discard() -> Bodies<'static> {
        Bodies {
            spool: None,
            trace: None,
            current: None,
            header: None,
            hashing: false,
            crlf: CrlfToLf::default(),
            buf: Vec::new(),
            done: None,
            done_header: None,
        }
    }

    /// Only each body's header hash is kept ([`Bodies::done_header`]),
    /// for a `BODY.PEEK[HEADER]` fetch.
    pub fn header_hashes() -> Bodies<'static> {
        Bodies { hashing: true, ..Bodies::discard() }
    }

    /// Bodies are staged in `spool`, each after a trace line if given, and
    /// their header hashes kept.
    pub fn into_spool(spool: &'m Spool, trace: Option<Trace>) -> Bodies<'m> {
        Bodies { spool: Some(spool), trace, hashing: true, buf: Vec::with_capacity(64 * 1024), ..Bodies::discard() }
    }

    fn start(&mut self) -> Result<()> {
        self.abort();
        self.crlf = CrlfToLf::default();
        self.header = self.hashing.then(HeaderHash::new);
        if let Some(spool) = self.spool {
            let prefix = self.trace.as_ref().map(Trace::line).unwrap_or_default();
            self.current = Some(spool.begin(&prefix)?);
        }
        Ok(())
    }

    fn data(&mut self, d: &[u8]) -> Result<()> {
        if !self.hashing {
            return Ok(());
        }
        self.buf.clear();
        self.crlf.convert(d, &mut self.buf);
        if let Some(h) = &mut self.header {
            h.feed(&self.buf);
        }
        if let Some(staged) = &mut self.current {
            staged.write(&self.buf)?;
        }
        Ok(())
    }

    fn end(&mut self) -> Result<()> {
        if !self.hashing {
            return Ok(());
        }
        self.buf.clear();
        self.crlf.finish(&mut self.buf);
        let mut header = self.header.take();
        if let Some(h) = &mut header {
            h.feed(&self.buf);
        }
        self.done_header = header.map(HeaderHash::finish);
        if let (Some(spool), Some(mut staged)) = (self.spool, self.current.take()) {
            staged.write(&self.buf)?;
            if let Some(old) = self.done.replace(spool.finish(staged)?) {
                spool.discard_finished(old);
            }
        }
        Ok(())
    }

    /// Removes a half-written or unclaimed body (dropped, a staged file
    /// removes itself).
    pub fn abort(&mut self) {
        self.current = None;
        self.done = None;
    }
}

/// An IMAP connection.
pub struct Imap<S> {
    wire: Wire<S>,
    reader: ResponseReader,
    tags: Tagger,
    /// Capabilities, upper-case.
    pub caps: Vec<String>,
    /// The server greeted with PREAUTH.
    pub preauth: bool,
    /// The greeting as the server sent it (bounded, one printable line;
    /// empty when it was read before, ahead of STARTTLS).
    pub greeting: String,
    /// Untagged EXISTS/EXPUNGE seen since the last check (for IDLE).
    pub changed: bool,
    /// Messages in the selected folder, as the last EXISTS and the
    /// EXPUNGEs since said.
    pub exists: u32,
    /// Bytes of the last response read.
    pub last_size: u64,
    /// How long the last IDLE lasted when the server ended it (a BYE or a
    /// closed connection) before we did.
    pub idle_ended_after: Option<Duration>,
}

/// Why an IDLE ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woke {
    /// The folder changed (EXISTS).
    Changed,
    /// Its time was up (renewal, or the poll safety net).
    Renewal,
    /// A poll was asked for.
    Asked,
    /// A stop was requested.
    Stopped,
}

/// A greeting as a line to quote: `* OK [CODE] text`, bounded and printable.
fn greeting_line(response: &Response) -> String {
    let Response::Untagged(Untagged::Status { status, code, text }) = response else {
        return String::from("(not an untagged status)");
    };
    let code = match code {
        Some(Code::Capability(_)) => " [CAPABILITY …]".to_string(),
        Some(Code::Other(c)) => format!(" [{c}]"),
        Some(other) => format!(" [{other:?}]"),
        None => String::new(),
    };
    crate::term::one_line(&format!("* {}{code} {text}", status.name()), 200)
}

impl<S: AsyncRead + AsyncWrite + Send + 'static> Imap<S> {
    /// Reads the greeting (one read before, by the imapd probe or before
    /// STARTTLS, comes first on the wire), then the capabilities.
    pub async fn start(wire: Wire<S>, limits: Limits, preauth_ok: bool) -> Result<Imap<S>> {
        let mut imap = Imap {
            wire,
            reader: ResponseReader::new(limits),
            tags: Tagger::default(),
            caps: Vec::new(),
            preauth: false,
            greeting: String::new(),
            changed: false,
            exists: 0,
            last_size: 0,
            idle_ended_after: None,
        };
        {
            let greeting = imap.read(&mut Bodies::discard()).await?;
            imap.greeting = greeting_line(&greeting);
            match Greeting::of(&greeting) {
                Greeting::Ok => {}
                Greeting::PreAuth if !preauth_ok => {
                    return Err(Error::Protocol(format!(
                        "{} greeted with PREAUTH on a network connection, where a login was expected — refusing; \
                         if this server is meant to do that, set allow_preauth = true",
                        imap.peer()
                    )));
                }
                Greeting::PreAuth => imap.preauth = true,
                Greeting::Bye(text) => {
                    return Err(Error::Server(format!("{} refused the session: {text}", imap.peer())));
                }
                Greeting::NotImap(what) if what.starts_with("`+") => {
                    return Err(Error::Protocol(format!(
                        "{} greeted {what}, which is not IMAP (a POP3 server greets `+OK`: use --pop3, or point \
                         the account at the IMAP server)",
                        imap.peer()
                    )));
                }
                Greeting::NotImap(what) => {
                    return Err(Error::Protocol(format!("{}: the greeting was {what}, not IMAP's", imap.peer())));
                }
            }
            if let Response::Untagged(Untagged::Status { code, .. }) = greeting {
                imap.take_caps(code);
            }
        }
        if imap.caps.is_empty() {
            imap.capability().await?;
        }
        if !imap.caps.iter().any(|c| c == "IMAP4REV1" || c == "IMAP4REV2") {
            return Err(Error::Protocol(format!(
                "{} is not an IMAP4rev1 server (CAPABILITY {:?})",
                imap.peer(),
                imap.caps
            )));
        }
        Ok(imap)
    }

    fn take_caps(&mut self, code: Option<Code>) {
        if let Some(Code::Capability(c)) = code {
            self.caps = c.iter().map(|s| s.to_ascii_uppercase()).collect();
        }
    }

    /// True if the server announced `cap`.
    pub fn has(&self, cap: &str) -> bool {
        self.caps.iter().any(|c| c == cap)
    }

    /// The peer name.
    pub fn peer(&self) -> &str {
        self.wire.peer()
    }

    /// Reads one response; body literals go to `bodies`.
    pub async fn read(&mut self, bodies: &mut Bodies<'_>) -> Result<Response> {
        let mut size = 0u64;
        loop {
            let (n, ev) = self
                .reader
                .next(self.wire.buffered())
                .map_err(|e| Error::Protocol(format!("{}: {e}", self.wire.peer())))?;
            size += n as u64;
            match ev {
                None if n == 0 => {
                    self.wire.fill().await?;
                    continue;
                }
                None => {}
                Some(Event::BodyStart(_)) => {
                    self.wire.progress();
                    bodies.start()?
                }
                Some(Event::BodyData(d)) => bodies.data(d)?,
                Some(Event::BodyEnd) => {
                    self.wire.progress();
                    bodies.end()?
                }
                Some(Event::Response(r)) => {
                    self.wire.consume(n);
                    self.wire.progress();
                    self.last_size = size;
                    // What the server said, at -vv: parsed, so a body shows
                    // only as Streamed, and cut short.
                    if tracing::enabled!(tracing::Level::DEBUG) {
                        let shown = format!("{r:?}");
                        let cut: String = shown.chars().take(300).collect();
                        let more = if cut.len() < shown.len() { " …" } else { "" };
                        tracing::debug!("{} S: {cut}{more}", self.wire.peer());
                    }
                    self.note(&r);
                    return Ok(r);
                }
            }
            self.wire.consume(n);
        }
    }

    fn note(&mut self, r: &Response) {
        match r {
            Response::Untagged(Untagged::Exists(n)) => {
                self.changed = true;
                self.exists = *n;
            }
            Response::Untagged(Untagged::Expunge(_)) => {
                self.changed = true;
                self.exists = self.exists.saturating_sub(1);
            }
            Response::Untagged(Untagged::Capability(c)) => {
                self.caps = c.iter().map(|s| s.to_ascii_uppercase()).collect();
            }
            Response::Untagged(Untagged::Status { status: Status::Bye, text, .. }) => {
                tracing::debug!("{}: BYE {text}", self.wire.peer());
            }
            _ => {}
        }
    }

    /// Sends a command; returns its tag.
    pub async fn send(&mut self, cmd: &Command) -> Result<String> {
        let tag = self.tags.next_tag();
        tracing::trace!("C: {tag} {cmd:?}");
        self.wire.send(&cmd.to_wire(&tag)).await?;
        Ok(tag)
    }

    /// Sends a command and reads up to its tagged completion, handing each
    /// untagged response to `keep`, which takes what it needs and returns
    /// false for what it has no use for. Nothing else is kept, and what
    /// nobody wanted is bounded ([`Unsolicited`]). NO and BAD become errors
    /// naming `what`.
    pub async fn run(
        &mut self,
        cmd: &Command,
        what: &str,
        mut keep: impl FnMut(Untagged) -> Result<bool>,
    ) -> Result<Done> {
        let tag = self.send(cmd).await?;
        let mut unsolicited = Unsolicited::default();
        loop {
            let r = self.read(&mut Bodies::discard()).await?;
            match self.step(r, &tag, what)? {
                Step::Done(done) => return Ok(done),
                Step::Other(Response::Untagged(u)) => {
                    if !keep(u)? {
                        let size = self.last_size;
                        unsolicited.add(self.wire.peer(), what, size)?;
                    }
                }
                Step::Other(_) => {
                    return Err(Error::Protocol(format!("{}: unexpected continuation during {what}", self.peer())));
                }
            }
        }
    }

    /// Sorts a response read while `tag` runs: its completion (NO and BAD
    /// as errors naming `what`), or anything else to be handled. A
    /// completion for another tag and a BYE end the command with an error.
    fn step(&self, r: Response, tag: &str, what: &str) -> Result<Step> {
        match r {
            Response::Tagged { tag: t, status, code, text } if t == tag => {
                let done = Done { status, code, text };
                if status != Status::Ok {
                    return Err(self.failure(what, &done));
                }
                Ok(Step::Done(done))
            }
            Response::Tagged { tag: t, .. } => {
                Err(Error::Protocol(format!("{}: completion for unknown tag {t}", self.peer())))
            }
            Response::Untagged(Untagged::Status { status: Status::Bye, text, .. }) => {
                Err(Error::Server(format!("{} closed the session: {text}", self.peer())))
            }
            other => Ok(Step::Other(other)),
        }
    }

    /// An error for a NO/BAD completion.
    pub fn failure(&self, what: &str, done: &Done) -> Error {
        let code = match &done.code {
            Some(Code::Other(c)) => format!("[{c}] "),
            Some(Code::AuthenticationFailed) => "[AUTHENTICATIONFAILED] ".into(),
            Some(Code::AuthorizationFailed) => "[AUTHORIZATIONFAILED] ".into(),
            _ => String::new(),
        };
        let msg = format!("{}: {what} failed: {:?} {code}{}", self.peer(), done.status, done.text);
        match &done.code {
            Some(Code::AuthenticationFailed | Code::AuthorizationFailed) => Error::Auth(msg),
            _ => Error::Server(msg),
        }
    }

    /// CAPABILITY (the answer is taken by [`Imap::read`]).
    pub async fn capability(&mut self) -> Result<()> {
        self.run(&Command::Capability, "CAPABILITY", |u| Ok(matches!(u, Untagged::Capability(_)))).await?;
        Ok(())
    }

    /// Logs in, unless the server already did (PREAUTH).
    pub async fn login(&mut self, user: &str, password: Option<&Secret>, method: AuthMethod) -> Result<()> {
        if self.preauth {
            return Ok(());
        }
        let Some(password) = password else {
            return Err(Error::Auth(format!(
                "{}: the IMAP server wants a password for {user}; set password_command (or --password-command)",
                self.peer()
            )));
        };
        // PLAIN with the response in the command only where SASL-IR says
        // so; elsewhere (GNU imap4d) it follows the server's continuation.
        let plain_ok = self.has("AUTH=PLAIN");
        let login_ok = !self.has("LOGINDISABLED") && Command::quotable(user) && Command::quotable(password.expose());
        let use_plain = match method {
            AuthMethod::Plain => true,
            AuthMethod::User => false,
            AuthMethod::Auto | AuthMethod::Apop => (plain_ok && self.has("SASL-IR")) || !login_ok,
        };
        if !use_plain && !login_ok {
            return Err(Error::Auth(format!(
                "{}: LOGIN is not possible here (LOGINDISABLED, or characters LOGIN cannot carry); use auth = \"plain\"",
                self.peer()
            )));
        }
        let what = format!("login as {user}");
        let keep_caps = |u: Untagged| Ok(matches!(u, Untagged::Capability(_)));
        let result = if use_plain {
            if !plain_ok {
                return Err(Error::Auth(format!(
                    "{}: the server offers neither LOGIN nor AUTHENTICATE PLAIN on this connection",
                    self.peer()
                )));
            }
            let response = sshmail_proto::pop3::sasl_plain(user, password.expose());
            if self.has("SASL-IR") {
                self.run(&Command::AuthenticatePlain(response), &what, keep_caps).await
            } else {
                self.authenticate_after_continuation(&response, &what).await
            }
        } else {
            self.run(&Command::Login(user.to_string(), password.expose().to_string()), &what, keep_caps).await
        };
        match result {
            Ok(done) => {
                self.take_caps(done.code);
                if self.caps.is_empty() || !self.caps.iter().any(|c| c == "IMAP4REV1") {
                    self.capability().await?;
                }
                Ok(())
            }
            Err(Error::Server(m)) => Err(Error::Auth(m)),
            Err(e) => Err(e),
        }
    }

    /// `AUTHENTICATE PLAIN`, then the response after the server's `+`.
    async fn authenticate_after_continuation(&mut self, response: &str, what: &str) -> Result<Done> {
        let tag = self.send(&Command::AuthenticatePlainStart).await?;
        let mut answered = false;
        let mut unsolicited = Unsolicited::default();
        loop {
            let r = self.read(&mut Bodies::discard()).await?;
            match self.step(r, &tag, what)? {
                Step::Done(done) => return Ok(done),
                Step::Other(Response::Continuation(_)) if !answered => {
                    answered = true;
                    // Not traced: it carries the password.
                    self.wire.send(format!("{response}\r\n").as_bytes()).await?;
                }
                Step::Other(Response::Continuation(_)) => {
                    self.wire.send(b"*\r\n").await?;
                    return Err(Error::Protocol(format!("{}: a second challenge during {what}", self.peer())));
                }
                Step::Other(Response::Untagged(Untagged::Capability(_))) => {}
                Step::Other(_) => {
                    let size = self.last_size;
                    unsolicited.add(self.wire.peer(), what, size)?;
                }
            }
        }
    }

    /// Lists the folders matching a pattern (UTF-8 in, UTF-8 out), skipping
    /// those that cannot be selected and those whose names no local name
    /// can carry (malformed modified UTF-7, NUL and control characters).
    pub async fn list(&mut self, pattern: &str) -> Result<Vec<String>> {
        let peer = self.peer().to_string();
        let mut out = Vec::new();
        let keep = |u: Untagged| {
            let Untagged::List { flags, name, .. } = u else { return Ok(false) };
            // Skipped names count as unused, so an endless LIST of them is
            // bounded too.
            if flags.iter().any(|f| f.eq_ignore_ascii_case("\\Noselect") || f.eq_ignore_ascii_case("\\NonExistent")) {
                return Ok(false);
            }
            match utf7::decode(&name) {
                Some(n) if !n.chars().any(char::is_control) => {
                    if out.len() >= MAX_FOLDERS {
                        return Err(Error::Protocol(format!("{peer}: LIST named more than {MAX_FOLDERS} folders")));
                    }
                    out.push(n);
                }
                _ => {
                    tracing::warn!(
                        "{peer}: skipping a folder whose name is malformed or holds control characters: {:?}",
                        String::from_utf8_lossy(&name)
                    );
                    return Ok(false);
                }
            }
            Ok(true)
        };
        self.run(&Command::List(utf7::encode(pattern)), &format!("LIST {pattern}"), keep).await?;
        Ok(out)
    }

    /// SELECT (or EXAMINE when `read_only`). Returns (UIDVALIDITY, EXISTS).
    pub async fn select(&mut self, folder: &str, read_only: bool) -> Result<(u32, u32)> {
        let name = utf7::encode(folder);
        let cmd = if read_only { Command::Examine(name) } else { Command::Select(name) };
        let mut validity = None;
        let mut exists = 0;
        self.run(&cmd, &format!("SELECT {folder}"), |u| {
            Ok(match u {
                Untagged::Exists(n) => {
                    exists = n;
                    true
                }
                Untagged::Status { code: Some(Code::UidValidity(v)), .. } => {
                    validity = Some(v);
                    true
                }
                // FLAGS, RECENT, PERMANENTFLAGS…: a few, bounded as unused.
                _ => false,
            })
        })
        .await?;
        let validity = match validity {
            None => return Err(Error::Protocol(format!("{}: SELECT {folder} gave no UIDVALIDITY", self.peer()))),
            Some(0) => {
                return Err(Error::Server(format!(
                    "{}: {folder} has UIDVALIDITY 0, which RFC 3501 forbids; without a valid one, messages fetched \
                     before cannot be recognised, so {folder} is left alone",
                    self.peer()
                )));
            }
            Some(v) => v,
        };
        self.changed = false;
        self.exists = exists;
        Ok((validity, exists))
    }

    /// UID, FLAGS and size of every message in the selected folder with a
    /// UID of at least `from` (1: all), each UID once (a repeated one is
    /// skipped with a warning). `from:*` names the last message even when
    /// its UID is lower (RFC 3501's `*`), so that one is left out here.
    pub async fn scan(&mut self, from: u32) -> Result<Vec<Listed>> {
        let peer = self.peer().to_string();
        let mut out: Vec<Listed> = Vec::new();
        let mut uids = std::collections::HashSet::new();
        let keep = |u: Untagged| {
            let Untagged::Fetch(f) = u else { return Ok(false) };
            let Some(uid) = f.uid else { return Ok(false) };
            if uid < from {
                return Ok(true);
            }
            if !uids.insert(uid) {
                tracing::warn!("{peer}: UID {uid} listed twice; it is fetched once");
                return Ok(true);
            }
            if out.len() >= MAX_FOLDER_MESSAGES {
                return Err(Error::Protocol(format!(
                    "{peer}: more than {MAX_FOLDER_MESSAGES} messages in one folder; sshmail fetches at most that many"
                )));
            }
            let flag = |name: &str| f.flags.as_ref().is_some_and(|fl| fl.iter().any(|x| x.eq_ignore_ascii_case(name)));
            out.push(Listed { uid, size: f.size, seen: flag("\\Seen"), deleted: flag("\\Deleted") });
            Ok(true)
        };
        let set = format!("{}:*", from.max(1));
        self.run(&Command::UidFetch(set, "(UID FLAGS RFC822.SIZE)"), "UID FETCH", keep).await?;
        Ok(out)
    }

    /// The fingerprint of each of `uids` in the selected folder (its header
    /// without bookkeeping fields, [`fingerprint::FETCH_ITEM`], in groups),
    /// for recognising messages after a UIDVALIDITY change. A UID the
    /// server does not answer for is left out.
    pub async fn fingerprints(&mut self, uids: &[u32]) -> Result<Vec<(u32, String)>> {
        let mut out = Vec::new();
        for group in uids.chunks(HEADER_GROUP) {
            let tag = self.send(&Command::UidFetch(uid_set(group), fingerprint::FETCH_ITEM)).await?;
            let mut bodies = Bodies::header_hashes();
            let mut unsolicited = Unsolicited::default();
            loop {
                let r = self.read(&mut bodies).await?;
                match self.step(r, &tag, "UID FETCH")? {
                    Step::Done(_) => break,
                    Step::Other(Response::Untagged(Untagged::Fetch(f))) if f.header == Some(Value::Streamed) => {
                        match (f.uid, bodies.done_header.take()) {
                            (Some(uid), Some(hash)) if group.contains(&uid) => out.push((uid, hash)),
                            _ => unsolicited.add(self.wire.peer(), "UID FETCH", self.last_size)?,
                        }
                    }
                    Step::Other(_) => unsolicited.add(self.wire.peer(), "UID FETCH", self.last_size)?,
                }
            }
        }
        Ok(out)
    }

    /// IDLE (RFC 2177) until the selected folder changes, `max` passes, a
    /// stop is requested or `wake` is notified (a poll asked for); then
    /// DONE. Where the server has no IDLE, waits (at most a minute) and
    /// sends NOOP, which reports changes too. Says why it ended.
    pub async fn idle(&mut self, max: Duration, stop: &crate::stop::Stop, wake: &Notify) -> Result<Woke> {
        if !self.has("IDLE") {
            let woke = tokio::select! {
                _ = tokio::time::sleep(max.min(Duration::from_secs(60))) => Woke::Renewal,
                _ = wake.notified() => Woke::Asked,
                _ = stop.wait() => return Ok(Woke::Stopped),
            };
            self.changed = false;
            self.run(&Command::Noop, "NOOP", |_| Ok(true)).await?;
            return Ok(if std::mem::take(&mut self.changed) { Woke::Changed } else { woke });
        }
        if std::mem::take(&mut self.changed) {
            return Ok(Woke::Changed);
        }
        let began = tokio::time::Instant::now();
        let tag = self.send(&Command::Idle).await?;
        match self.read(&mut Bodies::discard()).await? {
            Response::Continuation(_) => tracing::debug!("{}: idling", self.peer()),
            Response::Tagged { status, code, text, .. } => {
                return Err(self.failure("IDLE", &Done { status, code, text }));
            }
            _ => {}
        }
        let deadline = began + max;
        let woke = loop {
            // Our own timeout must not fire while idling: wait in slices
            // shorter than the wire's timeout, and treat silence as normal.
            // A stop request or a poll ends the IDLE like its deadline does.
            let wait = tokio::select! {
                w = self.wire_wait(deadline) => w.map(|more| if more { None } else { Some(Woke::Renewal) }),
                _ = wake.notified() => Ok(Some(Woke::Asked)),
                _ = stop.wait() => Ok(Some(Woke::Stopped)),
            };
            let wait = match wait {
                Ok(w) => w,
                Err(e) => return Err(self.ended_idle(began, e)),
            };
            if let Some(w) = wait {
                break w;
            }
            let r = match self.read(&mut Bodies::discard()).await {
                Ok(r) => r,
                Err(e) => return Err(self.ended_idle(began, e)),
            };
            if matches!(r, Response::Untagged(Untagged::Exists(_))) {
                break Woke::Changed;
            }
            if let Response::Untagged(Untagged::Status { status: Status::Bye, text, .. }) = r {
                let e = Error::Lost(format!("{} ended the IDLE: {text}", self.peer()));
                return Err(self.ended_idle(began, e));
            }
        };
        self.wire.send(b"DONE\r\n").await?;
        loop {
            match self.read(&mut Bodies::discard()).await? {
                Response::Tagged { tag: t, status, code, text } if t == tag => {
                    if status != Status::Ok {
                        return Err(self.failure("IDLE", &Done { status, code, text }));
                    }
                    break;
                }
                _ => continue,
            }
        }
        self.changed = false;
        Ok(woke)
    }

    /// Notes how long an IDLE lasted before the server (or the link) ended
    /// it, for the watch to renew sooner next time.
    fn ended_idle(&mut self, began: tokio::time::Instant, e: Error) -> Error {
        if matches!(e, Error::Lost(_)) {
            self.idle_ended_after = Some(began.elapsed());
        }
        e
    }

    /// Waits until bytes are buffered (true) or the deadline passes (false).
    async fn wire_wait(&mut self, deadline: tokio::time::Instant) -> Result<bool> {
        if !self.wire.buffered().is_empty() {
            return Ok(true);
        }
        match tokio::time::timeout_at(deadline, self.wire.fill_untimed()).await {
            Ok(r) => r.map(|_| true),
            Err(_) => Ok(false),
        }
    }

    /// LOGOUT, reading up to its completion.
    pub async fn logout(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.run(&Command::Logout, "LOGOUT", |_| Ok(true))).await;
        self.wire.shutdown().await;
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.wire.received
    }
}

/// A command in flight in the fetch pipeline.
pub enum Pending {
    /// UID FETCH of a batch (index into the batch list).
    Fetch(usize),
    /// A STORE or EXPUNGE applying the policy to delivered UIDs.
    Apply(Vec<u32>, PolicyStep),
}

/// One command of a policy applied to delivered messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyStep {
    /// `UID STORE +FLAGS (\Seen)`.
    Seen,
    /// `UID STORE +FLAGS (\Deleted)`.
    Flag,
    /// `UID EXPUNGE` of exactly those UIDs (UIDPLUS).
    UidExpunge,
    /// A plain `EXPUNGE` (with `allow_expunge_all`).
    Expunge,
}

impl PolicyStep {
    /// The command, for messages.
    pub fn name(self) -> &'static str {
        match self {
            PolicyStep::Seen => "UID STORE \\Seen",
            PolicyStep::Flag => "UID STORE \\Deleted",
            PolicyStep::UidExpunge => "UID EXPUNGE",
            PolicyStep::Expunge => "EXPUNGE",
        }
    }

    /// True if, done, it removed the messages from the server.
    pub fn removes(self) -> bool {
        matches!(self, PolicyStep::UidExpunge | PolicyStep::Expunge)
    }
}

/// True if a FETCH response carried a body.
pub fn has_body(f: &Fetch) -> bool {
    matches!(f.body, Some(Value::Streamed))
}

#[cfg(test)]
mod tests {
    //! The session against scripted greetings; the real-server behaviour is
    //! in tests/imap_fetch.rs.
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    async fn start_with(greeting: &[u8], preauth_ok: bool) -> Result<Imap<tokio::io::DuplexStream>> {
        let (client, mut server) = tokio::io::duplex(4096);
        server.write_all(greeting).await.unwrap();
        let wire = Wire::new(client, Duration::from_secs(5), "test server");
        let r = Imap::start(wire, Limits::default(), preauth_ok).await;
        drop(server);
        r
    }

    #[tokio::test]
    async fn preauth_is_refused_where_a_login_was_expected() {
        let e = start_with(b"* PREAUTH [CAPABILITY IMAP4rev1] hi\r\n", false).await.err().expect("refused");
        assert!(e.to_string().contains("allow_preauth"), "{e}");
        let ok = start_with(b"* PREAUTH [CAPABILITY IMAP4rev1] hi\r\n", true).await.expect("accepted");
        assert!(ok.preauth);
    }

    #[tokio::test]
    async fn bye_greeting_and_non_imap_servers_are_errors() {
        assert!(matches!(start_with(b"* BYE go away\r\n", true).await, Err(Error::Server(_))));
        assert!(start_with(b"+OK POP3 ready\r\n", true).await.is_err());
        assert!(start_with(b"* OK [CAPABILITY POP3] x\r\n", true).await.is_err());
    }
}
