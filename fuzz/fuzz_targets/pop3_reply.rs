//! POP3 status lines and listing lines: any bytes parse or are refused,
//! never a panic; what parses keeps the limits the parser promises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sshmail_proto::pop3::{self, Capabilities, Reply};

fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Ok(r) = Reply::parse(line) {
            let _ = r.code();
            if let Reply::Ok(t) = &r {
                let _ = pop3::parse_stat(t);
                let _ = pop3::apop_timestamp(t);
            }
        }
        if let Ok((_, uid)) = pop3::parse_uidl_line(pop3::unstuff(line)) {
            assert!(!uid.is_empty() && uid.len() <= 70);
            assert!(uid.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{uid:?}");
        }
        let _ = pop3::parse_list_line(line);
        let _ = pop3::is_terminator(line);
        Capabilities::default().add_line(line);
    }
});
