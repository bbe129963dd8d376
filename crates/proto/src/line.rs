//! Bounded line framing.
//!
//! Protocol status lines and listings are read one line at a time from a
//! buffer that the driver fills. A line longer than the limit is an error, not
//! a reason to keep reading: a server that never ends a line must not make us
//! buffer without bound.

use thiserror::Error;

/// A line was longer than the caller allowed.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("line longer than {limit} bytes without an end")]
pub struct LineTooLong {
    /// The limit that was exceeded.
    pub limit: usize,
}

/// Finds the first complete line in `buf`.
///
/// Returns `Ok(Some((line_end, next)))` where `buf[..line_end]` is the line
/// without its terminator and `buf[next..]` is what follows. A line ends with
/// LF; a CR before the LF is stripped. `Ok(None)` means more bytes are needed,
/// and `Err` that `limit` bytes arrived without a line end.
pub fn find_line(buf: &[u8], limit: usize) -> Result<Option<(usize, usize)>, LineTooLong> {
    let window = &buf[..buf.len().min(limit.saturating_add(2))];
    match memchr::memchr(b'\n', window) {
        Some(lf) => {
            let end = if lf > 0 && buf[lf - 1] == b'\r' { lf - 1 } else { lf };
            if end > limit {
                return Err(LineTooLong { limit });
            }
            Ok(Some((end, lf + 1)))
        }
        None if buf.len() > limit + 1 => Err(LineTooLong { limit }),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_crlf_and_lf_lines() {
        assert_eq!(find_line(b"+OK hi\r\nrest", 100), Ok(Some((6, 8))));
        assert_eq!(find_line(b"+OK hi\nrest", 100), Ok(Some((6, 7))));
        assert_eq!(find_line(b"\r\n", 100), Ok(Some((0, 2))));
    }

    #[test]
    fn incomplete_line_needs_more() {
        assert_eq!(find_line(b"+OK partial", 100), Ok(None));
        assert_eq!(find_line(b"+OK partial\r", 100), Ok(None));
    }

    #[test]
    fn every_read_is_bounded_line_limit() {
        let long = vec![b'a'; 200];
        assert_eq!(find_line(&long, 100), Err(LineTooLong { limit: 100 }));
        let mut exact = vec![b'a'; 100];
        exact.extend_from_slice(b"\r\n");
        assert_eq!(find_line(&exact, 100), Ok(Some((100, 102))));
        let mut over = vec![b'a'; 101];
        over.extend_from_slice(b"\r\n");
        assert!(find_line(&over, 100).is_err());
    }
}

/// Turns CRLF line ends into LF in a stream of chunks. A CR not followed by
/// LF is kept.
#[derive(Debug, Default, Clone)]
pub struct CrlfToLf {
    pending_cr: bool,
}

impl CrlfToLf {
    /// Converts `input`, appending to `out`.
    pub fn convert(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut rest = input;
        out.reserve(input.len() + 1);
        if self.pending_cr {
            self.pending_cr = false;
            if rest.first() != Some(&b'\n') {
                out.push(b'\r');
            }
        }
        while let Some(p) = memchr::memchr(b'\r', rest) {
            out.extend_from_slice(&rest[..p]);
            match rest.get(p + 1) {
                Some(b'\n') => {}
                Some(_) => out.push(b'\r'),
                None => self.pending_cr = true,
            }
            rest = &rest[p + 1..];
        }
        out.extend_from_slice(rest);
    }

    /// Ends the stream: a CR held back at the very end is data.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.pending_cr) {
            out.push(b'\r');
        }
    }
}

#[cfg(test)]
mod crlf_tests {
    use super::*;

    fn conv(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut c = CrlfToLf::default();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            c.convert(piece, &mut out);
        }
        c.finish(&mut out);
        out
    }

    #[test]
    fn converts_across_chunk_boundaries() {
        let input = b"a\r\nb\rc\r\n\r\nend\r";
        for chunk in 1..8 {
            assert_eq!(conv(input, chunk), b"a\nb\rc\n\nend\r", "chunk {chunk}");
        }
    }
}
