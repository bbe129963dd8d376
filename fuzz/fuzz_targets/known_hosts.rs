//! The known_hosts matcher over any file text: never a panic; and a hashed
//! line we write for a host is always found again for that host and key.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use sshmail::ssh::known_hosts::{Verdict, check_texts, hashed_line};

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA4Wnf7809rafH7bywEj2PUgPB5vDgYnByf99vRcZ5T4";

fuzz_target!(|data: &[u8]| {
    let key = russh::keys::PublicKey::from_openssh(KEY).expect("a valid key");
    let Some((&port, rest)) = data.split_first() else { return };
    let port = 20 + u16::from(port);
    let text = String::from_utf8_lossy(rest).into_owned();
    let file = PathBuf::from("known_hosts");
    let host = text.lines().next().unwrap_or("").trim();
    let _ = check_texts(&[(file.clone(), text.clone())], "mail.example.org", port, &key);
    if !host.is_empty() && !host.contains(char::is_whitespace) {
        let _ = check_texts(&[(file.clone(), text.clone())], host, port, &key);
        // Our own line for the host, alone: trusted.
        let line = hashed_line(host, port, &key, b"0123456789abcdefghij").expect("a line");
        let v = check_texts(&[(file.clone(), line)], host, port, &key);
        assert!(matches!(v, Verdict::Trusted(_)), "{host:?}:{port}: {v:?}");
    }
});
