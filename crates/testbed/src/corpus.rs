//! Deterministic test messages.
//!
//! The mix covers what breaks naive mail code: lines that start with `.` (POP3
//! dot-stuffing) and `From ` (mbox escaping), 8-bit bodies and RFC 2047
//! encoded-word headers, long lines, an empty body, and large base64
//! attachments. Messages use LF line ends, as a Maildir stores them.

/// A small, seeded xorshift generator: the same seed gives the same corpus.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (zero is replaced).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// A number in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
}

const WORDS: &[&str] = &[
    "mail", "through", "ssh", "tunnel", "server", "Grüße", "naïve", "café", "delivery", "maildir", "pop3", "imap",
    "durable", "ledger", "From", ".", "..", "the", "a", "über",
];

/// Message `i` of a mixed corpus. Every `big_every`-th message (if non-zero)
/// carries a base64 attachment of 1–5 MB.
pub fn mixed_message(i: usize, big_every: usize) -> Vec<u8> {
    let mut rng = Rng::new(0x5eed_0000 + i as u64);
    let mut m = String::new();
    m.push_str(&format!("Return-Path: <sender{i}@example.org>\n"));
    m.push_str(&format!("From: Sender {i} <sender{i}@example.org>\n"));
    m.push_str("To: mailuser@example.net\n");
    match i % 4 {
        0 => m.push_str(&format!("Subject: plain message {i}\n")),
        1 => m.push_str(&format!("Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?= {i}\n")),
        2 => m.push_str(&format!("Subject: =?ISO-8859-1?Q?caf=E9_au_lait?= {i}\n")),
        _ => m.push_str(&format!("Subject: 8-bit header Grüße {i}\n")),
    }
    m.push_str(&format!("Message-ID: <msg{i}.{}@example.org>\n", rng.next_u64()));
    m.push_str("Date: Sat, 21 Nov 2026 12:00:00 +0000\n");
    m.push_str("MIME-Version: 1.0\n");
    let big = big_every > 0 && i % big_every == big_every - 1;
    let boundary = format!("=-=boundary-{i}=-=");
    if big {
        m.push_str(&format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\n\n"));
        m.push_str(&format!(
            "--{boundary}\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
        ));
    } else {
        m.push_str("Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n");
    }
    let lines = if i % 17 == 5 { 0 } else { rng.range(3, 60) };
    for l in 0..lines {
        match rng.range(0, 10) {
            0 => m.push_str(".leading dot line\n"),
            1 => m.push_str(&format!("From the desk of sender {i}, line {l}\n")),
            2 => m.push_str(".\n"),
            3 => m.push_str(&"x".repeat(rng.range(200, 1200) as usize)),
            _ => {}
        }
        let n = rng.range(1, 14);
        let words: Vec<&str> = (0..n).map(|_| WORDS[rng.range(0, WORDS.len() as u64) as usize]).collect();
        m.push_str(&words.join(" "));
        m.push('\n');
    }
    let mut bytes = m.into_bytes();
    if big {
        let size = rng.range(1 << 20, 5 << 20) as usize;
        let mut raw = vec![0u8; size * 3 / 4];
        for chunk in raw.chunks_mut(8) {
            let r = rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
        bytes.extend_from_slice(
            format!("--{boundary}\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\nContent-Disposition: attachment; filename=\"blob{i}.bin\"\n\n").as_bytes(),
        );
        bytes.extend_from_slice(&base64_lines(&raw));
        bytes.extend_from_slice(format!("--{boundary}--\n").as_bytes());
    }
    bytes
}

/// A small plain message, for volume tests and benchmarks.
pub fn small_message(i: usize, body_bytes: usize) -> Vec<u8> {
    let mut m = format!(
        "From: bench <bench@example.org>\nTo: mailuser@example.net\nSubject: message {i}\nMessage-ID: <bench{i}@example.org>\nDate: Sat, 21 Nov 2026 12:00:00 +0000\n\n"
    )
    .into_bytes();
    let line = b"The quick brown fox jumps over the lazy dog, again and again.\n";
    while m.len() < body_bytes {
        m.extend_from_slice(line);
    }
    m
}

fn base64_lines(data: &[u8]) -> Vec<u8> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(data.len() * 4 / 3 + data.len() / 57 + 4);
    for line in data.chunks(57) {
        for c in line.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            out.push(T[(n >> 18) as usize & 63]);
            out.push(T[(n >> 12) as usize & 63]);
            out.push(if c.len() > 1 { T[(n >> 6) as usize & 63] } else { b'=' });
            out.push(if c.len() > 2 { T[n as usize & 63] } else { b'=' });
        }
        out.push(b'\n');
    }
    out
}
