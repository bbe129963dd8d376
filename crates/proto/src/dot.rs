//! Streaming decoder for dot-stuffed multi-line bodies.
//!
//! POP3 (RFC 1939 §3) sends a message as CRLF lines; a line that starts with
//! `.` gets another `.` in front, and the body ends with a line holding a lone
//! `.`. This decoder removes the stuffing and turns CRLF into LF as bytes
//! arrive, in chunks of any size, so a body of any length streams through a
//! fixed buffer. It never needs to see a whole line.
//!
//! Only CRLF ends a line. A bare LF is data: `a\n.\nb\r\n` is one line that
//! does not start with a dot, so a correct server sends it unstuffed, and a
//! decoder that took the LF for a line end would cut the message there.

/// Where the decoder is within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the first byte of a line.
    LineStart,
    /// The line began with `.`; the next byte decides stuffing or the end.
    Dot,
    /// The line is a lone `.` so far, and a CR followed it.
    DotCr,
    /// Inside a line.
    Middle,
    /// Inside a line, right after a CR.
    Cr,
    /// The terminating line was seen.
    Done,
}

/// Decodes one dot-stuffed body.
#[derive(Debug, Clone)]
pub struct DotDecoder {
    state: State,
    written: u64,
}

impl Default for DotDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl DotDecoder {
    /// A decoder positioned at the first line of a body.
    pub fn new() -> Self {
        DotDecoder { state: State::LineStart, written: 0 }
    }

    /// True once the terminating `.` line has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes of decoded output produced so far.
    pub fn decoded_len(&self) -> u64 {
        self.written
    }

    /// Decodes from `input`, appending the message bytes to `out`.
    ///
    /// Returns how many input bytes were consumed. Consumption stops right
    /// after the terminating line, so bytes that belong to the next pipelined
    /// reply stay with the caller.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let start_len = out.len();
        let mut i = 0;
        while i < input.len() && self.state != State::Done {
            let b = input[i];
            i += 1;
            self.state = match (self.state, b) {
                (State::LineStart, b'.') => State::Dot,
                (State::LineStart | State::Middle, b'\r') => State::Cr,
                (State::LineStart | State::Middle, _) => {
                    // Only CRLF ends a line (RFC 1939 §3): a bare LF is
                    // data, and a dot after it does not start a line. Copy
                    // the run of bytes up to the next CR in one go.
                    let run_end = memchr::memchr(b'\r', &input[i..]).map_or(input.len(), |p| i + p);
                    out.push(b);
                    out.extend_from_slice(&input[i..run_end]);
                    i = run_end;
                    State::Middle
                }
                (State::Dot, b'\r') => State::DotCr,
                (State::Dot, b'.') => {
                    // Stuffed dot: one `.` of the two is data.
                    out.push(b'.');
                    State::Middle
                }
                (State::Dot, _) => {
                    // A dot the server should have doubled; keep it.
                    out.push(b'.');
                    i -= 1;
                    State::Middle
                }
                (State::DotCr, b'\n') => State::Done,
                (State::DotCr, _) => {
                    out.extend_from_slice(b".\r");
                    i -= 1;
                    State::Middle
                }
                (State::Cr, b'\n') => {
                    out.push(b'\n');
                    State::LineStart
                }
                (State::Cr, _) => {
                    // A CR that does not end a line is data.
                    out.push(b'\r');
                    i -= 1;
                    State::Middle
                }
                (State::Done, _) => unreachable!("loop stops at Done"),
            };
        }
        self.written += (out.len() - start_len) as u64;
        i
    }
}

/// Encodes `body` (LF or CRLF lines) as a dot-stuffed, CRLF body with the
/// terminating line. Used by tests and by SMTP-style senders.
pub fn encode(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 32 + 5);
    let mut at_start = true;
    let mut prev = 0u8;
    for &b in body {
        if at_start && b == b'.' {
            out.push(b'.');
        }
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        at_start = b == b'\n';
        prev = b;
    }
    if !body.is_empty() && !at_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_in_chunks(wire: &[u8], chunk: usize) -> (Vec<u8>, usize, bool) {
        let mut d = DotDecoder::new();
        let mut out = Vec::new();
        let mut consumed = 0;
        for piece in wire.chunks(chunk.max(1)) {
            let n = d.decode(piece, &mut out);
            consumed += n;
            if d.is_done() {
                break;
            }
        }
        (out, consumed, d.is_done())
    }

    #[test]
    fn unstuffs_and_converts_line_ends() {
        let wire = b"Subject: x\r\n\r\n..leading dot\r\nFrom here\r\n.\r\n+OK next";
        let (out, consumed, done) = decode_in_chunks(wire, 1000);
        assert!(done);
        assert_eq!(out, b"Subject: x\n\n.leading dot\nFrom here\n");
        assert_eq!(&wire[consumed..], b"+OK next");
    }

    #[test]
    fn byte_at_a_time_matches_whole() {
        let wire = b"a\r\n..\r\n.x\r\nb\rc\r\nd\ne\r\n\r\n.\r\nTAIL";
        let whole = decode_in_chunks(wire, 1000);
        let bytes = decode_in_chunks(wire, 1);
        assert_eq!(whole, bytes);
        assert_eq!(whole.0, b"a\n.\n.x\nb\rc\nd\ne\n\n");
    }

    /// Regression: a bare LF was taken for a line end, so a body line
    /// `first part\n.\nsecond part` ended the message after `first part`;
    /// the cut message was filed and the server's copy deleted next run.
    #[test]
    fn regression_bare_lf_before_a_dot_does_not_end_the_body() {
        let wire = b"Subject: x\r\n\r\nfirst part\n.\nsecond part\r\nlast\r\n.\r\n+OK next";
        for chunk in [1, 2, 3, 7, 1000] {
            let (out, consumed, done) = decode_in_chunks(wire, chunk);
            assert!(done, "chunk {chunk}");
            assert_eq!(out, b"Subject: x\n\nfirst part\n.\nsecond part\nlast\n", "chunk {chunk}");
            assert_eq!(&wire[consumed..], b"+OK next", "chunk {chunk}");
        }
        // `.\n` at a line start is not the terminator either.
        let (out, _, done) = decode_in_chunks(b"a\r\n.\nb\r\n.\r\n", 1);
        assert!(done);
        assert_eq!(out, b"a\n.\nb\n");
    }

    #[test]
    fn empty_body() {
        let (out, consumed, done) = decode_in_chunks(b".\r\n", 7);
        assert!(done);
        assert!(out.is_empty());
        assert_eq!(consumed, 3);
    }

    #[test]
    fn cut_off_body_is_not_done() {
        let (_, _, done) = decode_in_chunks(b"line one\r\nline tw", 4);
        assert!(!done);
        let (_, _, done) = decode_in_chunks(b"line one\r\n.", 4);
        assert!(!done);
    }

    proptest! {
        #[test]
        fn round_trip(lines in proptest::collection::vec("[ -~\u{80}-\u{ff}]{0,40}", 0..30), chunk in 1usize..64) {
            let mut body = Vec::new();
            for l in &lines {
                body.extend_from_slice(l.as_bytes());
                body.push(b'\n');
            }
            let wire = encode(&body);
            let (out, consumed, done) = decode_in_chunks(&wire, chunk);
            prop_assert!(done);
            prop_assert_eq!(consumed, wire.len());
            prop_assert_eq!(out, body);
        }

        #[test]
        fn never_panics_on_garbage(data in proptest::collection::vec(any::<u8>(), 0..512), chunk in 1usize..32) {
            let _ = decode_in_chunks(&data, chunk);
        }
    }
}
