//! fetchmail's run control grammar: `set` statements and `poll`, `skip`
//! and `defaults` entries, each with server options and then one or more
//! users with their options. The result keeps every option with its line,
//! so that what sshmail cannot carry over is named exactly.

use super::lexer::{Token, tokens};

/// What a `.fetchmailrc` says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rc {
    /// `set daemon N`: seconds between polls.
    pub daemon: Option<u64>,
    /// `set logfile F`.
    pub logfile: Option<At<String>>,
    /// `set syslog` / `set no syslog`.
    pub syslog: Option<At<bool>>,
    /// The other `set` statements, as written.
    pub other: Vec<Opt>,
    /// `poll` and `skip` entries, in order, `defaults` applied.
    pub polls: Vec<Poll>,
    /// What was read in an order fetchmail refuses, and how it was taken:
    /// `line N: …`.
    pub lenient: Vec<(usize, String)>,
}

/// An option as written, for the warnings: `no keep`, `fetchlimit 10`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opt {
    /// Line of the keyword.
    pub line: usize,
    /// The keyword, with `no ` before it for a negation.
    pub name: String,
    /// Its argument(s), space-separated.
    pub value: Option<String>,
}

/// A value and the line it was set on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At<T> {
    /// The value.
    pub value: T,
    /// The line.
    pub line: usize,
}

/// One `poll` or `skip` entry: a server.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Poll {
    /// Line of `poll`/`skip`.
    pub line: usize,
    /// The name after `poll`: the host, unless `via` names another.
    pub name: String,
    /// `skip`: parsed but not polled.
    pub skip: bool,
    /// `via HOST`.
    pub via: Option<At<String>>,
    /// `protocol`, lower-cased.
    pub protocol: Option<At<String>>,
    /// `port` or `service`.
    pub service: Option<At<String>>,
    /// `auth`, lower-cased.
    pub auth: Option<At<String>>,
    /// `timeout` seconds.
    pub timeout: Option<At<u64>>,
    /// `interval N`: poll only every Nth cycle of the daemon.
    pub interval: Option<At<u64>>,
    /// `plugin CMD`.
    pub plugin: Option<At<String>>,
    /// Server options sshmail has no use for, as written.
    pub other: Vec<Opt>,
    /// The users; at least one.
    pub users: Vec<User>,
}

/// One user of a server entry.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct User {
    /// Line where the user begins.
    pub line: usize,
    /// The login on the server; fetchmail's default is the local user.
    pub remote: Option<String>,
    /// Local names (`is`/`to`); `*` is kept as written.
    pub localnames: Vec<String>,
    /// `password`.
    pub password: Option<At<String>>,
    /// `preconnect`.
    pub preconnect: Option<At<String>>,
    /// `postconnect`.
    pub postconnect: Option<At<String>>,
    /// `mda`.
    pub mda: Option<At<String>>,
    /// `smtphost` list.
    pub smtphost: Option<At<Vec<String>>>,
    /// `lmtp`.
    pub lmtp: Option<At<bool>>,
    /// `folder` list.
    pub folders: Option<At<Vec<String>>>,
    /// `keep`.
    pub keep: Option<At<bool>>,
    /// `fetchall`.
    pub fetchall: Option<At<bool>>,
    /// `flush`.
    pub flush: Option<At<bool>>,
    /// `idle`.
    pub idle: Option<At<bool>>,
    /// `limit` bytes (0: none).
    pub limit: Option<At<u64>>,
    /// `ssl`.
    pub ssl: Option<At<bool>>,
    /// `sslproto`.
    pub sslproto: Option<At<String>>,
    /// `sslcertck`.
    pub sslcertck: Option<At<bool>>,
    /// `sslfingerprint`.
    pub sslfingerprint: Option<At<String>>,
    /// `sslcertfile`.
    pub sslcertfile: Option<At<String>>,
    /// `rewrite` (fetchmail's default is on).
    pub rewrite: Option<At<bool>>,
    /// User options sshmail has no use for, as written.
    pub other: Vec<Opt>,
}

/// How many arguments a keyword takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arg {
    /// None; `no` may stand before it.
    Flag,
    /// One string.
    Str,
    /// One number.
    Num,
    /// One or more strings, up to the next keyword.
    List,
}

/// Server options.
const SERVER: &[(&str, Arg)] = &[
    ("via", Arg::Str),
    ("proto", Arg::Str),
    ("protocol", Arg::Str),
    ("service", Arg::Str),
    ("port", Arg::Str),
    ("auth", Arg::Str),
    ("authenticate", Arg::Str),
    ("timeout", Arg::Num),
    ("interval", Arg::Num),
    ("plugin", Arg::Str),
    ("plugout", Arg::Str),
    ("aka", Arg::List),
    ("localdomains", Arg::List),
    ("principal", Arg::Str),
    ("esmtpname", Arg::Str),
    ("esmtppassword", Arg::Str),
    ("qvirtual", Arg::Str),
    ("interface", Arg::Str),
    ("monitor", Arg::Str),
    ("badheader", Arg::Str),
    ("retrieve-error", Arg::Str),
    ("uidl", Arg::Flag),
    ("checkalias", Arg::Flag),
    ("dns", Arg::Flag),
    ("tracepolls", Arg::Flag),
    // `envelope [N] HEADER`: handled by `server_option`.
    ("envelope", Arg::Str),
];

/// User options (besides `user`, `is`, `to`, handled apart).
const USER: &[(&str, Arg)] = &[
    ("pass", Arg::Str),
    ("password", Arg::Str),
    ("folder", Arg::List),
    ("smtphost", Arg::List),
    ("smtp", Arg::List),
    ("fetchdomains", Arg::List),
    ("smtpaddress", Arg::Str),
    ("smtpname", Arg::Str),
    ("antispam", Arg::List),
    ("mda", Arg::Str),
    ("bsmtp", Arg::Str),
    ("lmtp", Arg::Flag),
    ("preconnect", Arg::Str),
    ("postconnect", Arg::Str),
    ("keep", Arg::Flag),
    ("flush", Arg::Flag),
    ("limitflush", Arg::Flag),
    ("fetchall", Arg::Flag),
    ("rewrite", Arg::Flag),
    ("forcecr", Arg::Flag),
    ("stripcr", Arg::Flag),
    ("pass8bits", Arg::Flag),
    ("dropstatus", Arg::Flag),
    ("dropdelivered", Arg::Flag),
    ("mimedecode", Arg::Flag),
    ("idle", Arg::Flag),
    ("ssl", Arg::Flag),
    ("sslcertck", Arg::Flag),
    ("sslkey", Arg::Str),
    ("sslcert", Arg::Str),
    ("sslproto", Arg::Str),
    ("sslcertfile", Arg::Str),
    ("sslcertpath", Arg::Str),
    ("sslcommonname", Arg::Str),
    ("sslfingerprint", Arg::Str),
    ("properties", Arg::Str),
    ("limit", Arg::Num),
    ("warnings", Arg::Num),
    ("fetchlimit", Arg::Num),
    ("fetchsizelimit", Arg::Num),
    ("fastuidl", Arg::Num),
    ("batchlimit", Arg::Num),
    ("expunge", Arg::Num),
];

/// `set` statements: name and whether it takes a value.
const SET: &[(&str, Arg)] = &[
    ("daemon", Arg::Num),
    ("logfile", Arg::Str),
    ("idfile", Arg::Str),
    ("pidfile", Arg::Str),
    ("postmaster", Arg::Str),
    ("properties", Arg::Str),
    ("syslog", Arg::Flag),
    ("bouncemail", Arg::Flag),
    ("spambounce", Arg::Flag),
    ("softbounce", Arg::Flag),
    ("invisible", Arg::Flag),
    ("showdots", Arg::Flag),
];

fn arg_of(table: &[(&str, Arg)], k: &str) -> Option<Arg> {
    table.iter().find(|(n, _)| *n == k).map(|(_, a)| *a)
}

/// True for a word that begins something: a statement, an option, a user.
fn is_keyword(t: &Token) -> bool {
    t.keyword().is_some_and(|k| {
        matches!(k, "poll" | "skip" | "defaults" | "set" | "user" | "username" | "is" | "to" | "here" | "there" | "no")
            || arg_of(SERVER, k).is_some()
            || arg_of(USER, k).is_some()
    })
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    /// True if the token before the last one read was a password
    /// keyword: the last one was then its value, and the one now read may
    /// be the rest of an unquoted secret.
    fn follows_secret(&self) -> bool {
        self.pos >= 3
            && self.toks[self.pos - 3].keyword().is_some_and(|k| matches!(k, "pass" | "password" | "esmtppassword"))
    }

    /// The argument of `key` (at `line`).
    fn string(&mut self, key: &str, line: usize) -> Result<String, String> {
        match self.peek() {
            Some(t) if !is_keyword(t) || t.quoted => Ok(self.next().map(|t| t.text).unwrap_or_default()),
            Some(t) => Err(format!("line {}: `{key}` needs a value, found `{}`", t.line, t.text)),
            None => Err(format!("line {line}: `{key}` needs a value at the end of the file")),
        }
    }

    fn number(&mut self, key: &str, line: usize) -> Result<u64, String> {
        let at = self.peek().map_or(line, |t| t.line);
        let s = self.string(key, line)?;
        s.parse().map_err(|_| format!("line {at}: `{key}` needs a number, found `{s}`"))
    }

    fn list(&mut self, key: &str, line: usize) -> Result<Vec<String>, String> {
        let mut v = vec![self.string(key, line)?];
        while let Some(t) = self.peek() {
            if is_keyword(t) && !t.quoted {
                break;
            }
            v.push(self.next().map(|t| t.text).unwrap_or_default());
        }
        Ok(v)
    }

    /// Reads the argument `arg` of `key` and gives it as written.
    fn value(&mut self, key: &str, arg: Arg, line: usize) -> Result<Option<String>, String> {
        Ok(match arg {
            Arg::Flag => None,
            Arg::Str => Some(self.string(key, line)?),
            Arg::Num => Some(self.number(key, line)?.to_string()),
            Arg::List => Some(self.list(key, line)?.join(" ")),
        })
    }
}

/// Parses a `.fetchmailrc`. An error names the line, never a value.
///
/// Two orders fetchmail refuses are read as their writers meant them, with
/// a note in [`Rc::lenient`], since they are what people paste (the 1998
/// "Secure POP via SSH" HOWTO prints the first): user options on lines
/// before a `poll` are that poll's user's, and user options before a
/// `user` in an entry are that user's.
pub fn parse(text: &str) -> Result<Rc, String> {
    let mut p = Parser { toks: tokens(text)?, pos: 0 };
    let mut rc = Rc::default();
    let mut defaults: Option<Poll> = None;
    // Options written before the `poll` they belong to.
    let mut lead: Option<Poll> = None;
    while let Some(t) = p.peek().cloned() {
        match t.keyword() {
            Some("set") => {
                p.next();
                set(&mut p, &mut rc, t.line)?
            }
            Some(k @ ("poll" | "skip")) => {
                p.next();
                let name = p.string(k, t.line)?;
                let base = lead.take().map(|l| (true, l)).or_else(|| defaults.clone().map(|d| (false, d)));
                let template = base.as_ref().and_then(|(_, b)| b.users.last().cloned()).unwrap_or_default();
                let mut poll = base.map(|(_, b)| b).unwrap_or_default();
                poll.line = t.line;
                poll.name = name;
                poll.skip = k == "skip";
                poll.users.clear();
                entry(&mut p, &mut poll, &template, &mut rc.lenient)?;
                rc.polls.push(poll);
            }
            Some("defaults") => {
                p.next();
                let mut d = Poll { line: t.line, ..Poll::default() };
                entry(&mut p, &mut d, &User::default(), &mut rc.lenient)?;
                defaults = Some(d);
            }
            Some(k) if lead.is_none() && starts_user_options(k) => {
                let mut l = defaults.clone().unwrap_or_default();
                l.users.clear();
                let template = defaults.as_ref().and_then(|d| d.users.first().cloned()).unwrap_or_default();
                entry(&mut p, &mut l, &template, &mut rc.lenient)?;
                if !matches!(p.peek().and_then(Token::keyword), Some("poll" | "skip")) {
                    return Err(format!("line {}: options before `poll`, but no `poll` follows them", t.line));
                }
                rc.lenient.push((
                    t.line,
                    "options before `poll` are taken as that poll's user's (fetchmail itself refuses this file: \
                     put them after the `poll` line)"
                        .into(),
                ));
                lead = Some(l);
            }
            _ => {
                return Err(format!(
                    "line {}: expected `poll`, `skip`, `defaults` or `set`, found `{}`",
                    t.line,
                    if t.quoted { "a string" } else { &t.text }
                ));
            }
        }
    }
    Ok(rc)
}

/// Whether a statement starting with `k` is a user's options (written
/// before the `poll` they belong to).
fn starts_user_options(k: &str) -> bool {
    matches!(k, "user" | "username" | "no" | "is" | "to") || arg_of(USER, k).is_some()
}

fn set(p: &mut Parser, rc: &mut Rc, line: usize) -> Result<(), String> {
    let mut no = false;
    let mut key = p.next().ok_or_else(|| format!("line {line}: `set` needs a name"))?;
    if key.keyword() == Some("no") {
        no = true;
        key = p.next().ok_or_else(|| format!("line {line}: `set no` needs a name"))?;
    }
    let k = key.keyword().unwrap_or("");
    let arg = arg_of(SET, k).ok_or_else(|| format!("line {}: unknown `set {}`", key.line, key.text))?;
    if no && arg != Arg::Flag {
        return Err(format!("line {}: `set no {k}` is not a setting", key.line));
    }
    let value = p.value(k, arg, key.line)?;
    match (k, value) {
        ("daemon", Some(v)) => rc.daemon = v.parse().ok(),
        ("logfile", Some(v)) => rc.logfile = Some(At { value: v, line: key.line }),
        ("syslog", _) => rc.syslog = Some(At { value: !no, line: key.line }),
        (_, value) => {
            rc.other.push(Opt { line: key.line, name: format!("set {}{k}", if no { "no " } else { "" }), value })
        }
    }
    Ok(())
}

/// Server options, then users, up to the next statement. User options
/// before the first `user` belong to that user when one follows (noted in
/// `lenient`); else to the implicit user (the local login), as fetchmail
/// has it.
fn entry(p: &mut Parser, poll: &mut Poll, template: &User, lenient: &mut Vec<(usize, String)>) -> Result<(), String> {
    let mut user: Option<User> = None;
    // The current user was started by options, not by `user`.
    let mut implicit = false;
    while let Some(t) = p.peek().cloned() {
        let k = t.keyword().unwrap_or("");
        if matches!(k, "poll" | "skip" | "defaults" | "set") {
            break;
        }
        p.next();
        if matches!(k, "user" | "username") {
            let base = match user.take() {
                Some(options) if implicit && poll.users.is_empty() => {
                    lenient.push((
                        options.line,
                        format!(
                            "options before `user` (line {}) are taken as that user's (fetchmail itself refuses \
                             this order: put them after the `user` name)",
                            t.line
                        ),
                    ));
                    options
                }
                Some(u) => {
                    poll.users.push(u);
                    template.clone()
                }
                None => template.clone(),
            };
            implicit = false;
            let mut u = User { line: t.line, ..base };
            u.remote = Some(p.string(k, t.line)?);
            match p.peek().and_then(|t| t.keyword()) {
                Some("here") => {
                    p.next();
                    u.localnames = vec![u.remote.take().unwrap_or_default()];
                }
                Some("there") => {
                    p.next();
                }
                _ => {}
            }
            user = Some(u);
            continue;
        }
        let (no, k, line) = if k == "no" {
            let n = p.next().ok_or_else(|| format!("line {}: `no` at the end of the file", t.line))?;
            (true, n.keyword().unwrap_or("").to_string(), n.line)
        } else {
            (false, k.to_string(), t.line)
        };
        if let Some(arg) = arg_of(SERVER, &k).filter(|_| !matches!(k.as_str(), "via" | "auth") || !no) {
            server_option(p, poll, &k, arg, no, line)?;
        } else if matches!(k.as_str(), "is" | "to") || arg_of(USER, &k).is_some() {
            let u = user.get_or_insert_with(|| {
                implicit = true;
                User { line, ..template.clone() }
            });
            user_option(p, u, &k, no, line)?;
        } else if no {
            return Err(format!("line {line}: `no {k}` is not an option"));
        } else if p.follows_secret() {
            return Err(format!(
                "line {line}: unknown option after a password (a password with spaces must be quoted)"
            ));
        } else {
            return Err(format!(
                "line {line}: unknown option `{}`",
                if t.quoted { "a string where an option was expected" } else { &t.text }
            ));
        }
    }
    if let Some(u) = user {
        poll.users.push(u);
    }
    if poll.users.is_empty() {
        poll.users.push(User { line: poll.line, ..template.clone() });
    }
    Ok(())
}

fn server_option(p: &mut Parser, poll: &mut Poll, k: &str, arg: Arg, no: bool, line: usize) -> Result<(), String> {
    if no && arg != Arg::Flag && k != "envelope" {
        return Err(format!("line {line}: `no {k}` is not an option"));
    }
    let at = |value| Some(At { value, line });
    match k {
        "via" => poll.via = at(p.string(k, line)?),
        "proto" | "protocol" => poll.protocol = at(p.string(k, line)?.to_ascii_lowercase()),
        "service" | "port" => poll.service = at(p.string(k, line)?),
        // The methods include words that are keywords elsewhere (`password`).
        "auth" | "authenticate" => {
            let t = p.next().ok_or_else(|| format!("line {line}: `{k}` needs a value at the end of the file"))?;
            poll.auth = at(t.text.to_ascii_lowercase());
        }
        "timeout" => poll.timeout = Some(At { value: p.number(k, line)?, line }),
        "interval" => poll.interval = Some(At { value: p.number(k, line)?, line }),
        "plugin" => poll.plugin = at(p.string(k, line)?),
        "envelope" if no => poll.other.push(Opt { line, name: "no envelope".into(), value: None }),
        "envelope" => {
            // `envelope [COUNT] HEADER`.
            let mut v = p.string(k, line)?;
            if v.bytes().all(|b| b.is_ascii_digit()) {
                v = format!("{v} {}", p.string(k, line)?);
            }
            poll.other.push(Opt { line, name: k.into(), value: Some(v) });
        }
        _ => {
            let value = p.value(k, arg, line)?;
            let name = if no { format!("no {k}") } else { k.to_string() };
            poll.other.push(Opt { line, name, value });
        }
    }
    Ok(())
}

fn user_option(p: &mut Parser, u: &mut User, k: &str, no: bool, line: usize) -> Result<(), String> {
    let flag = |v: bool| Some(At { value: v, line });
    if matches!(k, "is" | "to") {
        if no {
            return Err(format!("line {line}: `no {k}` is not an option"));
        }
        let names = p.list(k, line)?;
        match p.peek().and_then(|t| t.keyword()) {
            Some("there") => {
                // `is NAME there`: the name on the server.
                p.next();
                u.remote = names.into_iter().next();
            }
            Some("here") => {
                p.next();
                u.localnames = names;
            }
            _ => u.localnames = names,
        }
        return Ok(());
    }
    let arg = arg_of(USER, k).unwrap_or(Arg::Flag);
    if no && arg != Arg::Flag {
        return Err(format!("line {line}: `no {k}` is not an option"));
    }
    let at = |value| Some(At { value, line });
    match k {
        "pass" | "password" => u.password = at(p.string(k, line)?),
        "preconnect" => u.preconnect = at(p.string(k, line)?),
        "postconnect" => u.postconnect = at(p.string(k, line)?),
        "mda" => u.mda = at(p.string(k, line)?),
        "smtphost" | "smtp" => u.smtphost = Some(At { value: p.list(k, line)?, line }),
        "folder" => u.folders = Some(At { value: p.list(k, line)?, line }),
        "lmtp" => u.lmtp = flag(!no),
        "keep" => u.keep = flag(!no),
        "fetchall" => u.fetchall = flag(!no),
        "flush" => u.flush = flag(!no),
        "idle" => u.idle = flag(!no),
        "ssl" => u.ssl = flag(!no),
        "sslcertck" => u.sslcertck = flag(!no),
        "rewrite" => u.rewrite = flag(!no),
        "limit" => u.limit = Some(At { value: p.number(k, line)?, line }),
        "sslproto" => u.sslproto = at(p.string(k, line)?),
        "sslfingerprint" => u.sslfingerprint = at(p.string(k, line)?),
        "sslcertfile" => u.sslcertfile = at(p.string(k, line)?),
        _ => {
            let value = p.value(k, arg, line)?;
            let name = if no { format!("no {k}") } else { k.to_string() };
            u.other.push(Opt { line, name, value });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_howto_entry() {
        let rc = parse(
            "poll localhost with protocol pop3 and port 11110:\n    user msingh is manish\n    no rewrite\n    \
             preconnect \"ssh -C -f msingh@popserver -L 11110:popserver:110 sleep 5\"\n    password foobar;\n",
        )
        .unwrap();
        let p = &rc.polls[0];
        assert_eq!((p.name.as_str(), p.line), ("localhost", 1));
        assert_eq!(p.protocol.as_ref().unwrap().value, "pop3");
        assert_eq!(p.service.as_ref().unwrap().value, "11110");
        assert_eq!(p.users.len(), 1);
        let u = &p.users[0];
        assert_eq!(u.remote.as_deref(), Some("msingh"));
        assert_eq!(u.localnames, ["manish"]);
        assert_eq!(u.rewrite, Some(At { value: false, line: 3 }));
        assert_eq!(u.preconnect.as_ref().unwrap().line, 4);
        assert_eq!(u.password.as_ref().unwrap().value, "foobar");
    }

    #[test]
    fn defaults_apply_to_the_entries_after_them() {
        let rc =
            parse("poll a user x\ndefaults proto imap keep\npoll h user a\npoll g proto pop3 user b no keep").unwrap();
        assert_eq!(rc.polls[0].protocol, None);
        assert_eq!(rc.polls[1].protocol.as_ref().unwrap().value, "imap");
        assert!(rc.polls[1].users[0].keep.as_ref().unwrap().value);
        assert_eq!(rc.polls[2].protocol.as_ref().unwrap().value, "pop3");
        assert!(!rc.polls[2].users[0].keep.as_ref().unwrap().value);
    }

    #[test]
    fn here_and_there_name_the_sides() {
        let rc = parse("poll h user a here is b there\npoll g user \"a\" there is b here").unwrap();
        assert_eq!(rc.polls[0].users[0].remote.as_deref(), Some("b"));
        assert_eq!(rc.polls[0].users[0].localnames, ["a"]);
        assert_eq!(rc.polls[1].users[0].remote.as_deref(), Some("a"));
        assert_eq!(rc.polls[1].users[0].localnames, ["b"]);
    }

    #[test]
    fn lists_end_at_the_next_keyword() {
        let rc = parse("skip h, user a; pass b; smtphost x y/25, folder A B \"C D\" keep fetchall").unwrap();
        let (p, u) = (&rc.polls[0], &rc.polls[0].users[0]);
        assert!(p.skip);
        assert_eq!(u.smtphost.as_ref().unwrap().value, ["x", "y/25"]);
        assert_eq!(u.folders.as_ref().unwrap().value, ["A", "B", "C D"]);
        assert!(u.keep.as_ref().unwrap().value && u.fetchall.as_ref().unwrap().value);
    }

    #[test]
    fn several_users_of_one_server() {
        let rc = parse("poll h proto imap\n user a password p1\n user b password p2 keep").unwrap();
        let us = &rc.polls[0].users;
        assert_eq!(us.len(), 2);
        assert_eq!((us[0].remote.as_deref(), us[0].keep.as_ref()), (Some("a"), None));
        assert_eq!((us[1].remote.as_deref(), us[1].line), (Some("b"), 3));
    }

    #[test]
    fn set_statements() {
        let rc = parse(
            "set daemon 300\nset logfile \"/var/log/f\"\nset no syslog\nset postmaster \"pm\"\nset no bouncemail",
        )
        .unwrap();
        assert_eq!(rc.daemon, Some(300));
        assert_eq!(rc.logfile, Some(At { value: "/var/log/f".into(), line: 2 }));
        assert_eq!(rc.syslog, Some(At { value: false, line: 3 }));
        assert_eq!(
            rc.other.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
            ["set postmaster", "set no bouncemail"]
        );
    }

    #[test]
    fn other_options_are_kept_with_their_lines() {
        let rc = parse("poll h envelope 1 X-Envelope-To aka a b\n user u fetchlimit 10 no mimedecode").unwrap();
        let p = &rc.polls[0];
        assert_eq!(p.other[0], Opt { line: 1, name: "envelope".into(), value: Some("1 X-Envelope-To".into()) });
        assert_eq!(p.other[1].value.as_deref(), Some("a b"));
        assert_eq!(p.users[0].other[0], Opt { line: 2, name: "fetchlimit".into(), value: Some("10".into()) });
        assert_eq!(p.users[0].other[1].name, "no mimedecode");
    }

    #[test]
    fn errors_name_the_line_and_never_a_value() {
        let e = parse("poll h\n user a password s3cret keep bogus").unwrap_err();
        assert_eq!(e, "line 2: unknown option `bogus`");
        let e = parse("poll h\n limit many").unwrap_err();
        assert!(e.starts_with("line 2: `limit` needs a number"), "{e}");
        assert!(parse("set daemon").unwrap_err().contains("line 1"));
        assert!(parse("user a").unwrap_err().contains("no `poll` follows"));
        let e = parse("poll h user a password my secret").unwrap_err();
        assert!(!e.contains("secret`") && e.contains("after a password"), "{e}");
        let e = parse("poll h password \"s3cret\" \"stray\"").unwrap_err();
        assert!(!e.contains("s3cret") && !e.contains("stray"), "{e}");
    }
}
