//! The POP3 dot decoder, two ways:
//!
//! - round trip: any body, sent as a correct server sends it (CRLF lines,
//!   leading dots doubled, the terminator), decodes in pieces of any size
//!   to the body with CRLF turned into LF, and stops exactly after the
//!   terminator;
//! - garbage: any bytes decode without a panic and never consume more than
//!   given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sshmail_proto::dot::DotDecoder;

/// Stuffs `body`, whose lines end with CRLF (a bare LF is data), as RFC 1939
/// wants: a dot at the start of a line doubled, then `.` CRLF.
fn stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    let mut at_start = true;
    for (i, &b) in body.iter().enumerate() {
        if at_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_start = b == b'\n' && i > 0 && body[i - 1] == b'\r';
    }
    out.extend_from_slice(b".\r\n");
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);
    // A body of CRLF lines: cut the input into lines at `\r` bytes.
    let mut body = Vec::new();
    for part in rest.split(|&b| b == b'\r') {
        body.extend_from_slice(part);
        body.extend_from_slice(b"\r\n");
    }
    let wire = [stuff(&body), b"+OK next".to_vec()].concat();
    let mut d = DotDecoder::new();
    let mut out = Vec::new();
    let mut consumed = 0;
    for piece in wire.chunks(chunk) {
        let n = d.decode(piece, &mut out);
        assert!(n <= piece.len());
        consumed += n;
        if d.is_done() {
            break;
        }
    }
    assert!(d.is_done(), "the terminator was missed");
    assert_eq!(&wire[consumed..], b"+OK next", "stopped in the wrong place");
    let mut want = Vec::new();
    let mut i = 0;
    while i < body.len() {
        if body[i] == b'\r' && body.get(i + 1) == Some(&b'\n') {
            want.push(b'\n');
            i += 2;
        } else {
            want.push(body[i]);
            i += 1;
        }
    }
    assert_eq!(out, want, "round trip changed the body");
    assert_eq!(d.decoded_len(), want.len() as u64);

    // The input itself as a (possibly broken) body.
    let mut d = DotDecoder::new();
    let mut out = Vec::new();
    for piece in rest.chunks(chunk) {
        let n = d.decode(piece, &mut out);
        assert!(n <= piece.len());
        if d.is_done() {
            break;
        }
    }
});
