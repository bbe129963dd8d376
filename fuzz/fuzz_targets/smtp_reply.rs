//! SMTP/LMTP replies and EHLO extensions over any lines; and DATA encoding
//! round-trips through the dot decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sshmail_proto::dot::DotDecoder;
use sshmail_proto::smtp::{DataEncoder, Extensions, ReplyParser};

fuzz_target!(|data: &[u8]| {
    let mut parser = ReplyParser::default();
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match parser.line(line) {
            Ok(Some(r)) => {
                let _ = (r.is_positive(), r.is_intermediate(), r.is_transient(), r.text());
                let _ = Extensions::from_reply(&r);
                parser = ReplyParser::default();
            }
            Ok(None) => {}
            Err(_) => parser = ReplyParser::default(),
        }
    }
    // A message with LF line ends, as staged: DATA-encoded in two pieces,
    // then decoded as a POP3 body would be: the same message.
    let message: Vec<u8> = data.iter().copied().filter(|&b| b != b'\r').collect();
    let split = data.first().map_or(0, |&b| usize::from(b)).min(message.len());
    let mut enc = DataEncoder::default();
    let mut wire = Vec::new();
    enc.encode(&message[..split], &mut wire);
    enc.encode(&message[split..], &mut wire);
    enc.finish(&mut wire);
    let mut d = DotDecoder::new();
    let mut out = Vec::new();
    let used = d.decode(&wire, &mut out);
    assert!(d.is_done());
    assert_eq!(used, wire.len());
    let mut want = message.clone();
    if !want.is_empty() && !want.ends_with(b"\n") {
        want.push(b'\n');
    }
    assert_eq!(out, want);
});
