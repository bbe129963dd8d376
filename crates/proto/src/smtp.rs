//! SMTP (RFC 5321) and LMTP (RFC 2033) client core: replies, EHLO
//! capabilities, commands, and a streaming encoder for DATA.

use thiserror::Error;

/// Longest reply line accepted (RFC 5321 says 512; be generous).
pub const MAX_LINE: usize = 4096;
/// Most lines in one multi-line reply.
pub const MAX_REPLY_LINES: usize = 1000;

/// A problem with what the server sent.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SmtpError {
    /// Not `NNN-text` or `NNN text`.
    #[error("malformed SMTP reply line: {0:?}")]
    BadLine(String),
    /// A multi-line reply changed its code or went on too long.
    #[error("inconsistent SMTP reply: {0}")]
    Inconsistent(String),
}

/// A complete reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The text of each line.
    pub lines: Vec<String>,
}

impl Reply {
    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }
    /// 3xx (DATA's go-ahead).
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }
    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }
    /// The reply as one line for messages.
    pub fn text(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" / "))
    }
}

/// Assembles replies from lines.
#[derive(Debug, Default)]
pub struct ReplyParser {
    code: Option<u16>,
    lines: Vec<String>,
}

impl ReplyParser {
    /// Adds one line (without CRLF). Returns the reply when it is complete.
    pub fn line(&mut self, line: &[u8]) -> Result<Option<Reply>, SmtpError> {
        let text = String::from_utf8_lossy(line);
        let bad = || SmtpError::BadLine(text.chars().take(120).collect());
        if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        let code: u16 = text[..3].parse().map_err(|_| bad())?;
        if !(200..600).contains(&code) {
            return Err(bad());
        }
        let (last, rest) = match line.get(3) {
            None => (true, ""),
            Some(b' ') => (true, &text[4..]),
            Some(b'-') => (false, &text[4..]),
            Some(_) => return Err(bad()),
        };
        if let Some(c) = self.code
            && c != code
        {
            return Err(SmtpError::Inconsistent(format!("code {code} after {c}")));
        }
        if self.lines.len() >= MAX_REPLY_LINES {
            return Err(SmtpError::Inconsistent(format!("more than {MAX_REPLY_LINES} lines")));
        }
        self.code = Some(code);
        self.lines.push(rest.to_string());
        if last {
            let lines = std::mem::take(&mut self.lines);
            self.code = None;
            return Ok(Some(Reply { code, lines }));
        }
        Ok(None)
    }
}

/// What EHLO/LHLO announced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// 8BITMIME.
    pub eight_bit_mime: bool,
    /// SMTPUTF8.
    pub smtputf8: bool,
    /// SIZE limit, if announced (0: no limit given).
    pub size: Option<u64>,
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// The AUTH mechanisms offered (RFC 4954), upper case; also read from
    /// the old `AUTH=` form.
    pub auth: Vec<String>,
}

impl Extensions {
    /// Reads the extension lines of an EHLO/LHLO reply (the first line is the
    /// greeting and is skipped).
    pub fn from_reply(r: &Reply) -> Extensions {
        let mut e = Extensions::default();
        for l in r.lines.iter().skip(1) {
            let mut w = l.split_ascii_whitespace();
            match w.next().map(str::to_ascii_uppercase).as_deref() {
                Some("PIPELINING") => e.pipelining = true,
                Some("8BITMIME") => e.eight_bit_mime = true,
                Some("SMTPUTF8") => e.smtputf8 = true,
                Some("SIZE") => e.size = Some(w.next().and_then(|s| s.parse().ok()).unwrap_or(0)),
                Some("STARTTLS") => e.starttls = true,
                Some(word) if word == "AUTH" || word.starts_with("AUTH=") => {
                    let first = word.strip_prefix("AUTH=").filter(|m| !m.is_empty()).map(str::to_string);
                    for m in first.into_iter().chain(w.map(str::to_ascii_uppercase)) {
                        if !e.auth.contains(&m) {
                            e.auth.push(m);
                        }
                    }
                }
                _ => {}
            }
        }
        e
    }
}

/// `MAIL FROM:<sender>` with the parameters the message needs.
pub fn mail_from(sender: &str, ext: &Extensions, eight_bit: bool, utf8: bool, size: u64) -> String {
    let mut s = format!("MAIL FROM:<{sender}>");
    if eight_bit && ext.eight_bit_mime {
        s.push_str(" BODY=8BITMIME");
    }
    if utf8 && ext.smtputf8 {
        s.push_str(" SMTPUTF8");
    }
    if ext.size.is_some() {
        s.push_str(&format!(" SIZE={size}"));
    }
    s.push_str("\r\n");
    s
}

/// `RCPT TO:<recipient>`.
pub fn rcpt_to(recipient: &str) -> String {
    format!("RCPT TO:<{recipient}>\r\n")
}

/// Encodes a message with LF (or CRLF) line ends as SMTP DATA: CRLF line
/// ends, leading dots doubled, streamed in chunks of any size.
#[derive(Debug, Clone)]
pub struct DataEncoder {
    at_line_start: bool,
    after_cr: bool,
    any: bool,
}

impl Default for DataEncoder {
    fn default() -> Self {
        DataEncoder { at_line_start: true, after_cr: false, any: false }
    }
}

impl DataEncoder {
    /// Encodes `input`, appending to `out`.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            self.any = true;
            if self.at_line_start && b == b'.' {
                out.push(b'.');
            }
            match b {
                b'\n' => {
                    if !self.after_cr {
                        out.push(b'\r');
                    }
                    out.push(b'\n');
                    self.at_line_start = true;
                    self.after_cr = false;
                    continue;
                }
                b'\r' => {
                    out.push(b'\r');
                    self.after_cr = true;
                    self.at_line_start = false;
                    continue;
                }
                _ => out.push(b),
            }
            self.after_cr = false;
            self.at_line_start = false;
        }
    }

    /// Ends the data: a final line end if missing, then `.` CRLF.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.any && !self.at_line_start {
            if !self.after_cr {
                out.push(b'\r');
            }
            out.push(b'\n');
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dot::DotDecoder;
    use proptest::prelude::*;

    #[test]
    fn multi_line_replies() {
        let mut p = ReplyParser::default();
        assert_eq!(p.line(b"250-mail.example.org").unwrap(), None);
        assert_eq!(p.line(b"250-PIPELINING").unwrap(), None);
        assert_eq!(p.line(b"250-SIZE 1000000").unwrap(), None);
        let r = p.line(b"250 8BITMIME").unwrap().unwrap();
        assert_eq!(r.code, 250);
        let e = Extensions::from_reply(&r);
        assert!(e.pipelining && e.eight_bit_mime && !e.smtputf8);
        assert_eq!(e.size, Some(1_000_000));
        assert_eq!(p.line(b"354 go ahead").unwrap().unwrap().code, 354);
        assert_eq!(p.line(b"221").unwrap().unwrap().lines, vec![String::new()]);
    }

    #[test]
    fn starttls_and_auth_mechanisms_in_both_forms() {
        let r = Reply {
            code: 250,
            lines: vec!["relay".into(), "STARTTLS".into(), "AUTH plain LOGIN".into(), "AUTH=LOGIN CRAM-MD5".into()],
        };
        let e = Extensions::from_reply(&r);
        assert!(e.starttls);
        assert_eq!(e.auth, ["PLAIN", "LOGIN", "CRAM-MD5"]);
        let none = Extensions::from_reply(&Reply { code: 250, lines: vec!["relay".into(), "AUTHX".into()] });
        assert!(!none.starttls && none.auth.is_empty());
    }

    #[test]
    fn bad_replies() {
        let mut p = ReplyParser::default();
        assert!(p.line(b"hello").is_err());
        assert!(p.line(b"25").is_err());
        assert!(p.line(b"999 what").is_err());
        p.line(b"250-a").unwrap();
        assert!(p.line(b"550 b").is_err());
        let r = Reply { code: 451, lines: vec!["try later".into()] };
        assert!(r.is_transient() && !r.is_positive());
    }

    #[test]
    fn data_is_stuffed_and_crlf() {
        let mut e = DataEncoder::default();
        let mut out = Vec::new();
        for piece in [&b"Subject: x\n\n.hidden\n"[..], b"..two\nlast"] {
            e.encode(piece, &mut out);
        }
        e.finish(&mut out);
        assert_eq!(out, b"Subject: x\r\n\r\n..hidden\r\n...two\r\nlast\r\n.\r\n");
        let mut e = DataEncoder::default();
        let mut out = Vec::new();
        e.finish(&mut out);
        assert_eq!(out, b".\r\n");
    }

    #[test]
    fn mail_from_parameters() {
        let ext =
            Extensions { pipelining: true, eight_bit_mime: true, smtputf8: true, size: Some(0), ..Default::default() };
        assert_eq!(mail_from("a@b", &ext, true, false, 42), "MAIL FROM:<a@b> BODY=8BITMIME SIZE=42\r\n");
        assert_eq!(mail_from("", &Extensions::default(), true, true, 1), "MAIL FROM:<>\r\n");
    }

    proptest! {
        #[test]
        fn encoder_round_trips_through_the_pop3_decoder(lines in proptest::collection::vec("[ -~]{0,30}", 0..20), chunk in 1usize..20) {
            let mut body = Vec::new();
            for l in &lines {
                body.extend_from_slice(l.as_bytes());
                body.push(b'\n');
            }
            let mut e = DataEncoder::default();
            let mut wire = Vec::new();
            for piece in body.chunks(chunk) {
                e.encode(piece, &mut wire);
            }
            e.finish(&mut wire);
            let mut d = DotDecoder::new();
            let mut out = Vec::new();
            let used = d.decode(&wire, &mut out);
            prop_assert!(d.is_done());
            prop_assert_eq!(used, wire.len());
            prop_assert_eq!(out, body);
        }
    }
}
