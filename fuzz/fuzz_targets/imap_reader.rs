//! The IMAP response reader over any bytes, fed in pieces: never a panic,
//! never more consumed than given, body pieces never more than announced,
//! and memory bounded by the limits (small ones here, so they are hit).
//! Modified UTF-7 round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sshmail_proto::imap::{Event, Limits, ResponseReader, utf7};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else { return };
    let chunk = usize::from(chunk % 64).max(1);
    let limits = Limits { max_line: 4096, max_literal: 4096, max_body: 1 << 16, max_response: 1 << 16 };
    let mut reader = ResponseReader::new(limits);
    let mut buf: Vec<u8> = Vec::new();
    let mut pieces = rest.chunks(chunk);
    let mut body_left: Option<u64> = None;
    'outer: loop {
        loop {
            let (n, ev) = match reader.next(&buf) {
                Ok(r) => r,
                Err(_) => break 'outer,
            };
            assert!(n <= buf.len());
            match ev {
                Some(Event::BodyStart(len)) => {
                    assert!(len <= limits.max_body);
                    body_left = Some(len);
                }
                Some(Event::BodyData(d)) => {
                    let left = body_left.as_mut().expect("body data outside a body");
                    assert!(d.len() as u64 <= *left);
                    *left -= d.len() as u64;
                }
                Some(Event::BodyEnd) => {
                    assert_eq!(body_left.take(), Some(0), "a body ended early");
                }
                Some(Event::Response(_)) => {}
                None if n == 0 => {
                    buf.drain(..n);
                    break;
                }
                None => {}
            }
            buf.drain(..n);
        }
        match pieces.next() {
            Some(p) => buf.extend_from_slice(p),
            None => break,
        }
        assert!(buf.len() <= limits.max_line + 2 + chunk + 4096, "the reader let the buffer grow");
    }
    if let Some(s) = utf7::decode(rest) {
        assert_eq!(utf7::decode(utf7::encode(&s).as_bytes()).as_deref(), Some(s.as_str()));
    }
    if let Ok(s) = std::str::from_utf8(rest) {
        assert_eq!(utf7::decode(utf7::encode(s).as_bytes()).as_deref(), Some(s));
    }
});
