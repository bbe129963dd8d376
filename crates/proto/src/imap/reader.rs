//! Incremental IMAP response reader that streams message bodies.
//!
//! IMAP responses are lines that may carry literals (`{n}\r\n` followed by n
//! raw bytes) and continue after them. This reader takes bytes in whatever
//! pieces the transport delivers and yields:
//!
//! - [`Event::Response`] for every complete response, parsed;
//! - [`Event::BodyStart`], [`Event::BodyData`]…, [`Event::BodyEnd`] for the
//!   literal of a `FETCH … BODY[] {n}`, so the body goes to its sink without
//!   ever being held whole. The response it belongs to follows as an
//!   [`Event::Response`] whose `body` is [`Value::Streamed`].
//!
//! Everything else is bounded: line length, literal size, response size.

use super::response::{Part, Response, parse_response};
use super::{ImapError, Limits};
use crate::line::find_line;

/// What the reader found.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete response.
    Response(Response),
    /// A message body literal of this many bytes begins.
    BodyStart(u64),
    /// Body bytes (borrowed from the input).
    BodyData(&'a [u8]),
    /// The body literal is complete.
    BodyEnd,
}

#[derive(Debug)]
enum State {
    Line,
    Literal { remaining: u64, buf: Vec<u8> },
    Body { remaining: u64 },
    BodyDone,
}

/// Reads responses from a byte stream.
#[derive(Debug)]
pub struct ResponseReader {
    limits: Limits,
    state: State,
    parts: Vec<Part>,
    size: u64,
}

impl ResponseReader {
    /// A reader with these limits.
    pub fn new(limits: Limits) -> ResponseReader {
        ResponseReader { limits, state: State::Line, parts: Vec::new(), size: 0 }
    }

    /// Takes the next step from `input`: how many bytes it consumed and the
    /// event it completed, if any. `(0, None)` means more input is needed.
    pub fn next<'a>(&mut self, input: &'a [u8]) -> Result<(usize, Option<Event<'a>>), ImapError> {
        match &mut self.state {
            State::Line => {
                let Some((end, next)) =
                    find_line(input, self.limits.max_line).map_err(|e| ImapError::LineTooLong(e.limit))?
                else {
                    return Ok((0, None));
                };
                let line = &input[..end];
                self.grow(end as u64)?;
                let Some((text_end, len)) = literal_marker(line) else {
                    self.parts.push(Part::Text(line.to_vec()));
                    let parts = std::mem::take(&mut self.parts);
                    self.size = 0;
                    return Ok((next, Some(Event::Response(parse_response(&parts)?))));
                };
                self.parts.push(Part::Text(line[..text_end].to_vec()));
                if is_body_literal(&self.parts) {
                    if len > self.limits.max_body {
                        return Err(ImapError::LiteralTooLarge { len, limit: self.limits.max_body });
                    }
                    self.state = if len == 0 { State::BodyDone } else { State::Body { remaining: len } };
                    return Ok((next, Some(Event::BodyStart(len))));
                }
                if len > self.limits.max_literal {
                    return Err(ImapError::LiteralTooLarge { len, limit: self.limits.max_literal });
                }
                self.grow(len)?;
                self.state = State::Literal { remaining: len, buf: Vec::with_capacity(len as usize) };
                if len == 0 {
                    self.parts.push(Part::Literal(Vec::new()));
                    self.state = State::Line;
                }
                Ok((next, None))
            }
            State::Literal { remaining, buf } => {
                if input.is_empty() {
                    return Ok((0, None));
                }
                let take = (*remaining).min(input.len() as u64) as usize;
                buf.extend_from_slice(&input[..take]);
                *remaining -= take as u64;
                if *remaining == 0 {
                    let lit = std::mem::take(buf);
                    self.parts.push(Part::Literal(lit));
                    self.state = State::Line;
                }
                Ok((take, None))
            }
            State::Body { remaining } => {
                if input.is_empty() {
                    return Ok((0, None));
                }
                let take = (*remaining).min(input.len() as u64) as usize;
                *remaining -= take as u64;
                if *remaining == 0 {
                    self.state = State::BodyDone;
                }
                Ok((take, Some(Event::BodyData(&input[..take]))))
            }
            State::BodyDone => {
                self.parts.push(Part::Streamed);
                self.state = State::Line;
                Ok((0, Some(Event::BodyEnd)))
            }
        }
    }

    fn grow(&mut self, n: u64) -> Result<(), ImapError> {
        self.size += n;
        if self.size > self.limits.max_response {
            return Err(ImapError::ResponseTooLarge(self.limits.max_response));
        }
        Ok(())
    }
}

/// If `line` ends with a literal marker `{n}`, `{n+}` or `~{n}`, returns where
/// the text before the marker ends and n.
fn literal_marker(line: &[u8]) -> Option<(usize, u64)> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let len = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let text_end = if open > 0 && line[open - 1] == b'~' { open - 1 } else { open };
    Some((text_end, len))
}

/// True if the literal that the parts end with is a FETCH message body.
fn is_body_literal(parts: &[Part]) -> bool {
    let Some(Part::Text(first)) = parts.first() else { return false };
    let mut words = first.split(|&b| b == b' ');
    if words.next() != Some(b"*") {
        return false;
    }
    if !words.next().is_some_and(|w| !w.is_empty() && w.iter().all(u8::is_ascii_digit)) {
        return false;
    }
    if !words.next().is_some_and(|w| w.eq_ignore_ascii_case(b"FETCH")) {
        return false;
    }
    let Some(Part::Text(last)) = parts.last() else { return false };
    let last = last.trim_ascii_end().to_ascii_uppercase();
    let last = match last.iter().rposition(|&b| b == b'<') {
        Some(p) if last.ends_with(b">") => &last[..p],
        _ => &last[..],
    };
    // A header section names fields in brackets, with spaces and parentheses.
    if let Some(p) = last.windows(12).rposition(|w| w == b"BODY[HEADER.")
        && (p == 0 || matches!(last[p - 1], b' ' | b'('))
        && last.ends_with(b")]")
        && !last[p..last.len() - 1].contains(&b']')
    {
        return true;
    }
    let item = last.rsplit(|&b| b == b' ' || b == b'(').next().unwrap_or_default();
    matches!(item, b"BODY[]" | b"RFC822" | b"BINARY[]" | b"RFC822.TEXT" | b"BODY[TEXT]" | b"BODY[HEADER]")
}
