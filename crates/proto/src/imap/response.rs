//! IMAP response parsing (the subset a fetcher needs, RFC 3501 / 9051).
//!
//! A response arrives as [`Part`]s: text between literals, the literals
//! themselves, and a placeholder where a streamed body was. It is tokenized
//! and turned into a [`Response`]. Unknown responses are kept as
//! [`Untagged::Other`] rather than refused: servers send many extensions.

use super::ImapError;

/// A piece of one response as read from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text without CRLF and without the literal marker.
    Text(Vec<u8>),
    /// A literal's bytes.
    Literal(Vec<u8>),
    /// A body literal that was streamed elsewhere.
    Streamed,
}

/// Status of a tagged or untagged status response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// OK.
    Ok,
    /// NO: the command failed.
    No,
    /// BAD: protocol error.
    Bad,
    /// PREAUTH greeting: already authenticated.
    PreAuth,
    /// BYE: the server is closing.
    Bye,
}

impl Status {
    /// The word as IMAP writes it.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::No => "NO",
            Status::Bad => "BAD",
            Status::PreAuth => "PREAUTH",
            Status::Bye => "BYE",
        }
    }
}

/// A response code (`[...]` after the status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    /// UIDVALIDITY.
    UidValidity(u32),
    /// UIDNEXT.
    UidNext(u32),
    /// CAPABILITY list.
    Capability(Vec<String>),
    /// READ-ONLY.
    ReadOnly,
    /// READ-WRITE.
    ReadWrite,
    /// AUTHENTICATIONFAILED (RFC 5530): the credentials were refused.
    AuthenticationFailed,
    /// AUTHORIZATIONFAILED (RFC 5530): right credentials, no access as
    /// the user asked for.
    AuthorizationFailed,
    /// Anything else, as text.
    Other(String),
}

/// A value in a FETCH response or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Atom or number, as text.
    Atom(String),
    /// Quoted string or literal bytes.
    String(Vec<u8>),
    /// A body streamed elsewhere.
    Streamed,
    /// NIL.
    Nil,
    /// Parenthesized list.
    List(Vec<Value>),
}

/// The items of a FETCH response that we use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetch {
    /// Message sequence number.
    pub seq: u32,
    /// UID.
    pub uid: Option<u32>,
    /// RFC822.SIZE.
    pub size: Option<u64>,
    /// FLAGS.
    pub flags: Option<Vec<String>>,
    /// BODY[] was present (streamed, or NIL if the server had none).
    pub body: Option<Value>,
    /// A header section (`BODY[HEADER]`, `BODY[HEADER.FIELDS.NOT (…)]`)
    /// was present: never the message itself.
    pub header: Option<Value>,
}

/// An untagged response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Untagged {
    /// `* OK|NO|BAD|PREAUTH|BYE [code] text`.
    Status {
        /// The status.
        status: Status,
        /// The response code, if any.
        code: Option<Code>,
        /// Human-readable text.
        text: String,
    },
    /// `* CAPABILITY ...`.
    Capability(Vec<String>),
    /// `* n EXISTS`.
    Exists(u32),
    /// `* n EXPUNGE`.
    Expunge(u32),
    /// `* n FETCH (...)`.
    Fetch(Fetch),
    /// `* SEARCH n...`.
    Search(Vec<u32>),
    /// `* LIST (flags) delimiter name`.
    List {
        /// Name attributes such as `\Noselect`.
        flags: Vec<String>,
        /// Hierarchy delimiter.
        delimiter: Option<char>,
        /// Mailbox name as sent (modified UTF-7).
        name: Vec<u8>,
    },
    /// Anything else, by its keyword.
    Other(String),
}

/// One response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Tagged completion.
    Tagged {
        /// The tag.
        tag: String,
        /// OK, NO or BAD.
        status: Status,
        /// The response code, if any.
        code: Option<Code>,
        /// Human-readable text.
        text: String,
    },
    /// Untagged data.
    Untagged(Untagged),
    /// `+ text`: go on.
    Continuation(String),
}

/// What an IMAP server's greeting says: the one check of a greeting, for
/// a session, for finding a preauthenticated imapd, and before STARTTLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Greeting {
    /// `* OK`: a login follows.
    Ok,
    /// `* PREAUTH`: the session is already authenticated.
    PreAuth,
    /// `* BYE`: the server refuses the session (its text).
    Bye(String),
    /// Something else: not an IMAP greeting (what it was, for messages).
    NotImap(String),
}

impl Greeting {
    /// The kind of greeting `response` is.
    pub fn of(response: &Response) -> Greeting {
        match response {
            Response::Untagged(Untagged::Status { status: Status::Ok, .. }) => Greeting::Ok,
            Response::Untagged(Untagged::Status { status: Status::PreAuth, .. }) => Greeting::PreAuth,
            Response::Untagged(Untagged::Status { status: Status::Bye, text, .. }) => Greeting::Bye(text.clone()),
            Response::Continuation(text) => Greeting::NotImap(format!("`+{text}`")),
            Response::Tagged { tag, text, .. } => Greeting::NotImap(format!("`{tag} {text}`")),
            Response::Untagged(_) => {
                Greeting::NotImap("an untagged response other than OK, PREAUTH or BYE".to_string())
            }
        }
    }

    /// The kind of greeting the first line of `input` is (it must end in
    /// a line end; a literal in a greeting is not IMAP's either).
    pub fn parse(input: &[u8]) -> Greeting {
        let mut reader = super::ResponseReader::new(super::Limits { max_literal: 0, ..super::Limits::default() });
        match reader.next(input) {
            Ok((_, Some(super::Event::Response(r)))) => Greeting::of(&r),
            _ => {
                let line = input.split(|&b| b == b'\n').next().unwrap_or_default();
                let shown: String = String::from_utf8_lossy(line).trim_end().chars().take(100).collect();
                Greeting::NotImap(format!("`{shown}`"))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Atom(Vec<u8>),
    Str(Vec<u8>),
    Streamed,
    Open,
    Close,
}

/// Tokenizes the parts of one response.
fn tokenize(parts: &[Part]) -> Result<Vec<Token>, ImapError> {
    let mut out = Vec::new();
    for part in parts {
        match part {
            Part::Literal(b) => out.push(Token::Str(b.clone())),
            Part::Streamed => out.push(Token::Streamed),
            Part::Text(t) => {
                let mut i = 0;
                while i < t.len() {
                    match t[i] {
                        b' ' => i += 1,
                        b'(' => {
                            out.push(Token::Open);
                            i += 1;
                        }
                        b')' => {
                            out.push(Token::Close);
                            i += 1;
                        }
                        b'"' => {
                            let mut s = Vec::new();
                            i += 1;
                            loop {
                                match t.get(i) {
                                    None => return Err(ImapError::Malformed("unterminated quoted string".into())),
                                    Some(b'\\') => {
                                        s.push(*t.get(i + 1).ok_or_else(|| ImapError::Malformed("bad escape".into()))?);
                                        i += 2;
                                    }
                                    Some(b'"') => {
                                        i += 1;
                                        break;
                                    }
                                    Some(&c) => {
                                        s.push(c);
                                        i += 1;
                                    }
                                }
                            }
                            out.push(Token::Str(s));
                        }
                        _ => {
                            let start = i;
                            // Brackets belong to atoms like BODY[] and [UIDNEXT.
                            let mut depth = 0usize;
                            while i < t.len() {
                                match t[i] {
                                    b'[' => depth += 1,
                                    b']' => depth = depth.saturating_sub(1),
                                    b' ' | b'(' | b')' if depth == 0 => break,
                                    b'"' if depth == 0 => break,
                                    _ => {}
                                }
                                i += 1;
                            }
                            out.push(Token::Atom(t[start..i].to_vec()));
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

fn text_of(parts: &[Part]) -> Vec<u8> {
    match parts.first() {
        Some(Part::Text(t)) => t.clone(),
        _ => Vec::new(),
    }
}

/// Parses one complete response.
pub fn parse_response(parts: &[Part]) -> Result<Response, ImapError> {
    let first = text_of(parts);
    if first.starts_with(b"+") {
        let text = String::from_utf8_lossy(first.get(2..).unwrap_or_default()).into_owned();
        return Ok(Response::Continuation(text));
    }
    let (tag, rest) = split_word(&first);
    if tag.is_empty() {
        return Err(ImapError::Malformed(truncate(&first)));
    }
    if tag != b"*" {
        let (status_word, after) = split_word(rest);
        let status = match parse_status(status_word) {
            Some(s @ (Status::Ok | Status::No | Status::Bad)) => s,
            _ => return Err(ImapError::Malformed(truncate(&first))),
        };
        let (code, text) = parse_resp_text(after);
        return Ok(Response::Tagged { tag: String::from_utf8_lossy(tag).into_owned(), status, code, text });
    }
    let (word, after) = split_word(rest);
    if let Some(status) = parse_status(word) {
        let (code, text) = parse_resp_text(after);
        return Ok(Response::Untagged(Untagged::Status { status, code, text }));
    }
    let upper = word.to_ascii_uppercase();
    match upper.as_slice() {
        b"CAPABILITY" => Ok(Response::Untagged(Untagged::Capability(words(after)))),
        b"SEARCH" => {
            let nums = words(after).iter().filter_map(|w| w.parse().ok()).collect();
            Ok(Response::Untagged(Untagged::Search(nums)))
        }
        b"LIST" | b"LSUB" => parse_list(parts),
        _ if !word.is_empty() && word.iter().all(u8::is_ascii_digit) => {
            let n: u32 = std::str::from_utf8(word).ok().and_then(|s| s.parse().ok()).ok_or_else(|| bad(&first))?;
            let (kind, _) = split_word(after);
            match kind.to_ascii_uppercase().as_slice() {
                b"EXISTS" => Ok(Response::Untagged(Untagged::Exists(n))),
                b"EXPUNGE" => Ok(Response::Untagged(Untagged::Expunge(n))),
                b"FETCH" => parse_fetch(n, parts),
                other => Ok(Response::Untagged(Untagged::Other(String::from_utf8_lossy(other).into_owned()))),
            }
        }
        _ => Ok(Response::Untagged(Untagged::Other(String::from_utf8_lossy(&upper).into_owned()))),
    }
}

fn bad(line: &[u8]) -> ImapError {
    ImapError::Malformed(truncate(line))
}

fn truncate(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(120)]).into_owned()
}

fn split_word(b: &[u8]) -> (&[u8], &[u8]) {
    match b.iter().position(|&c| c == b' ') {
        Some(p) => (&b[..p], &b[p + 1..]),
        None => (b, &[]),
    }
}

fn words(b: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(b).split_ascii_whitespace().map(str::to_string).collect()
}

fn parse_status(w: &[u8]) -> Option<Status> {
    Some(match w.to_ascii_uppercase().as_slice() {
        b"OK" => Status::Ok,
        b"NO" => Status::No,
        b"BAD" => Status::Bad,
        b"PREAUTH" => Status::PreAuth,
        b"BYE" => Status::Bye,
        _ => return None,
    })
}

fn parse_resp_text(b: &[u8]) -> (Option<Code>, String) {
    if let Some(inner) = b.strip_prefix(b"[")
        && let Some(end) = inner.iter().position(|&c| c == b']')
    {
        let code = &inner[..end];
        let text = inner[end + 1..].trim_ascii_start();
        let (name, args) = split_word(code);
        let num = || std::str::from_utf8(args).ok().and_then(|s| s.trim().parse().ok());
        let parsed = match name.to_ascii_uppercase().as_slice() {
            b"UIDVALIDITY" => num().map(Code::UidValidity),
            b"UIDNEXT" => num().map(Code::UidNext),
            b"CAPABILITY" => Some(Code::Capability(words(args))),
            b"READ-ONLY" => Some(Code::ReadOnly),
            b"READ-WRITE" => Some(Code::ReadWrite),
            b"AUTHENTICATIONFAILED" => Some(Code::AuthenticationFailed),
            b"AUTHORIZATIONFAILED" => Some(Code::AuthorizationFailed),
            _ => None,
        };
        let code = parsed.unwrap_or_else(|| Code::Other(String::from_utf8_lossy(code).into_owned()));
        return (Some(code), String::from_utf8_lossy(text).into_owned());
    }
    (None, String::from_utf8_lossy(b).into_owned())
}

/// Parses one value starting at `tokens[i]`; returns it and the next index.
fn parse_value(tokens: &[Token], i: usize, depth: usize) -> Result<(Value, usize), ImapError> {
    if depth > 32 {
        return Err(ImapError::Malformed("lists nested too deep".into()));
    }
    match tokens.get(i) {
        None => Err(ImapError::Malformed("response ends early".into())),
        Some(Token::Open) => {
            let mut items = Vec::new();
            let mut j = i + 1;
            loop {
                match tokens.get(j) {
                    Some(Token::Close) => return Ok((Value::List(items), j + 1)),
                    None => return Err(ImapError::Malformed("unclosed list".into())),
                    _ => {
                        let (v, next) = parse_value(tokens, j, depth + 1)?;
                        items.push(v);
                        j = next;
                    }
                }
            }
        }
        Some(Token::Close) => Err(ImapError::Malformed("unexpected )".into())),
        Some(Token::Str(s)) => Ok((Value::String(s.clone()), i + 1)),
        Some(Token::Streamed) => Ok((Value::Streamed, i + 1)),
        Some(Token::Atom(a)) if a.eq_ignore_ascii_case(b"NIL") => Ok((Value::Nil, i + 1)),
        Some(Token::Atom(a)) => Ok((Value::Atom(String::from_utf8_lossy(a).into_owned()), i + 1)),
    }
}

fn atoms(v: &Value) -> Vec<String> {
    match v {
        Value::List(items) => items
            .iter()
            .filter_map(|x| match x {
                Value::Atom(a) => Some(a.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn parse_fetch(seq: u32, parts: &[Part]) -> Result<Response, ImapError> {
    let tokens = tokenize(parts)?;
    // "*" n "FETCH" "(" ...
    let (list, _) = parse_value(&tokens, 3, 0)?;
    let Value::List(items) = list else { return Err(ImapError::Malformed("FETCH without a list".into())) };
    let mut f = Fetch { seq, ..Default::default() };
    let mut it = items.into_iter();
    while let Some(name) = it.next() {
        let Value::Atom(name) = name else { return Err(ImapError::Malformed("FETCH item name".into())) };
        let value = it.next().ok_or_else(|| ImapError::Malformed(format!("FETCH item {name} without value")))?;
        let upper = name.to_ascii_uppercase();
        match upper.as_str() {
            "UID" => f.uid = Some(number(&value)?),
            "RFC822.SIZE" => f.size = Some(number(&value)?),
            "FLAGS" => f.flags = Some(atoms(&value)),
            _ if upper.starts_with("BODY[]") || upper == "RFC822" || upper.starts_with("BINARY[]") => {
                f.body = Some(value)
            }
            _ if upper.starts_with("BODY[HEADER]") || upper.starts_with("BODY[HEADER.FIELDS") => f.header = Some(value),
            _ => {}
        }
    }
    Ok(Response::Untagged(Untagged::Fetch(f)))
}

fn number<T: std::str::FromStr>(v: &Value) -> Result<T, ImapError> {
    match v {
        Value::Atom(a) => a.parse().map_err(|_| ImapError::Malformed(format!("not a number: {a}"))),
        _ => Err(ImapError::Malformed("expected a number".into())),
    }
}

fn parse_list(parts: &[Part]) -> Result<Response, ImapError> {
    let tokens = tokenize(parts)?;
    let (flags, i) = parse_value(&tokens, 2, 0)?;
    let (delim, i) = parse_value(&tokens, i, 0)?;
    let (name, _) = parse_value(&tokens, i, 0)?;
    let delimiter = match delim {
        Value::String(s) if s.len() == 1 => Some(s[0] as char),
        _ => None,
    };
    let name = match name {
        Value::String(s) => s,
        Value::Atom(a) => a.into_bytes(),
        _ => return Err(ImapError::Malformed("LIST without a name".into())),
    };
    Ok(Response::Untagged(Untagged::List { flags: atoms(&flags), delimiter, name }))
}
