//! What recognises a message when its server renumbers the folder.
//!
//! A UIDVALIDITY change makes every UID on record meaningless, and flags may
//! not survive it (GNU imap4d gives an mbox a new UIDVALIDITY at every
//! outside delivery). The ledger keeps, beside each IMAP delivery, the
//! message's fingerprint: a hash of its header block (everything up to and
//! including the first empty line, line ends as LF) without the fields
//! mailbox servers write into messages for their own bookkeeping
//! ([`BOOKKEEPING`]: imap4d, Dovecot and UW imapd add `X-UID`, `Status` and
//! the like to mbox messages, pop3d `X-UIDL`). After a change, the header
//! of each message not yet known is fetched without those fields
//! (`BODY.PEEK[HEADER.FIELDS.NOT (…)]`, the same bytes) and recognised by
//! its hash.
//!
//! The whole header block, not only Message-ID: a false match would leave
//! a message undelivered (and, in delete mode, delete it), a missed one
//! only delivers a copy again. Two different messages with the same header
//! block, Received lines and all, do not happen; two copies of one message
//! are counted (each delivery on record recognises one).

use sha2::Digest as _;

/// Header fields a mailbox server may add to or rewrite in a stored
/// message: not part of what identifies it.
pub const BOOKKEEPING: [&str; 8] =
    ["X-IMAPbase", "X-IMAP", "X-UID", "Status", "X-Status", "X-Keywords", "X-UIDL", "Content-Length"];

/// The FETCH item that gives a header block as [`HeaderHash`] hashes it.
pub const FETCH_ITEM: &str =
    "(UID BODY.PEEK[HEADER.FIELDS.NOT (X-IMAPbase X-IMAP X-UID Status X-Status X-Keywords X-UIDL Content-Length)])";

/// Header bytes hashed at most; a longer header is hashed this far (a
/// server's copy of it then will not match, which costs a duplicate, not a
/// loss).
const MAX_HEADER: usize = 256 << 10;
/// Longest field name looked at; a longer one is kept.
const MAX_NAME: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line; the previous field was kept (or not).
    LineStart { kept: bool },
    /// Reading a field name (in `name`).
    Name,
    /// Inside a line that is hashed.
    Kept,
    /// Inside a line of a bookkeeping field.
    Skipped,
    /// Past the header block.
    Done,
}

/// A streaming hash of a message's header block, fed LF-normalised bytes.
pub struct HeaderHash {
    hasher: sha2::Sha256,
    state: State,
    name: Vec<u8>,
    hashed: usize,
}

impl Default for HeaderHash {
    fn default() -> Self {
        HeaderHash::new()
    }
}

impl HeaderHash {
    /// A fresh hash for the next message.
    pub fn new() -> HeaderHash {
        HeaderHash { hasher: sha2::Sha256::new(), state: State::LineStart { kept: true }, name: Vec::new(), hashed: 0 }
    }

    /// Feeds message bytes; what follows the header block is ignored.
    pub fn feed(&mut self, data: &[u8]) {
        let mut i = 0;
        while i < data.len() && self.state != State::Done {
            let b = data[i];
            match self.state {
                State::LineStart { kept } => match b {
                    b'\n' => {
                        self.hash(b"\n");
                        self.state = State::Done;
                    }
                    b' ' | b'\t' => {
                        // A continuation line belongs to the field before.
                        if kept {
                            self.hash(&[b]);
                        }
                        self.state = if kept { State::Kept } else { State::Skipped };
                    }
                    _ => {
                        self.name.clear();
                        self.name.push(b);
                        self.state = State::Name;
                    }
                },
                State::Name => {
                    self.name.push(b);
                    if b == b':' || b == b'\n' || self.name.len() > MAX_NAME {
                        let field = &self.name[..self.name.len() - 1];
                        let skip = b == b':'
                            && BOOKKEEPING.iter().any(|f| f.as_bytes().eq_ignore_ascii_case(field.trim_ascii_end()));
                        if !skip {
                            let name = std::mem::take(&mut self.name);
                            self.hash(&name);
                            self.name = name;
                        }
                        self.state = match (b, skip) {
                            (b'\n', _) => State::LineStart { kept: true },
                            (_, true) => State::Skipped,
                            _ => State::Kept,
                        };
                    }
                }
                State::Kept => {
                    // Hash the rest of the line in one piece.
                    let end = data[i..].iter().position(|&c| c == b'\n').map(|p| i + p + 1);
                    let stop = end.unwrap_or(data.len());
                    self.hash(&data[i..stop]);
                    if end.is_some() {
                        self.state = State::LineStart { kept: true };
                    }
                    i = stop;
                    continue;
                }
                State::Skipped => {
                    if b == b'\n' {
                        self.state = State::LineStart { kept: false };
                    }
                }
                State::Done => {}
            }
            i += 1;
        }
    }

    fn hash(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.hashed += bytes.len();
        if self.hashed >= MAX_HEADER {
            self.state = State::Done;
        }
    }

    /// The fingerprint: 32 hex digits.
    pub fn finish(self) -> String {
        self.hasher.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(parts: &[&[u8]]) -> String {
        let mut h = HeaderHash::new();
        for p in parts {
            h.feed(p);
        }
        h.finish()
    }

    #[test]
    fn only_the_header_block_counts_however_it_is_split() {
        let whole = hash(&[b"From: a\nSubject: b\n\nbody one\n"]);
        assert_eq!(whole, hash(&[b"From: a\nSubject: b\n\nanother body\n"]));
        assert_eq!(whole, hash(&[b"From: a\nSubject: b\n", b"\n", b"body"]));
        assert_eq!(whole, hash(&[b"Fr", b"om: a\nSub", b"ject: b\n\n"]), "a fetched header section");
        assert_ne!(whole, hash(&[b"From: a\nSubject: c\n\nbody one\n"]));
        assert_ne!(whole, hash(&[b"From: a\nSubject: b\nX: y\n\nbody one\n"]));
        assert_ne!(whole, hash(&[b"From: a\nSubject: b\n b\n\nbody one\n"]), "a continuation counts");
    }

    /// What an mbox server writes into a stored message does not change
    /// its fingerprint; what the sender wrote does.
    #[test]
    fn bookkeeping_fields_do_not_count() {
        let plain = hash(&[b"From: a\nSubject: b\n\nbody\n"]);
        let stored = hash(&[
            b"From: a\nX-IMAPbase: 1796169756 4\n  continued\nSubject: b\nx-uid: 1\nStatus: O\nX-UIDL: 12\n\nbody\n",
        ]);
        assert_eq!(plain, stored);
        assert_ne!(plain, hash(&[b"From: a\nSubject: b\nX-UIDs: 1\n\nbody\n"]));
    }

    #[test]
    fn the_fetch_item_leaves_out_exactly_the_bookkeeping_fields() {
        let inner = FETCH_ITEM.split_once("NOT (").unwrap().1.trim_end_matches(")])");
        assert_eq!(inner.split(' ').collect::<Vec<_>>(), BOOKKEEPING);
    }

    #[test]
    fn a_message_without_a_body_is_all_header() {
        assert_ne!(hash(&[b"From: a\n"]), hash(&[b"From: b\n"]));
        assert_ne!(hash(&[b"no colon here\n\n"]), hash(&[b"\n"]));
    }
}
