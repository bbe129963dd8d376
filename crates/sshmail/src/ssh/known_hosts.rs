//! Host key verification against OpenSSH `known_hosts` files.
//!
//! Our own matcher, because the one in russh misses wildcards, negation,
//! `@revoked` and `@cert-authority`. The rules follow sshd(8) "SSH_KNOWN_HOSTS
//! FILE FORMAT":
//!
//! - the name looked up is `host` on port 22 and `[host]:port` otherwise;
//! - a line's patterns are comma-separated, may use `*` and `?`, and a match
//!   of a `!`-negated pattern excludes the line; a hashed entry
//!   `|1|salt|hash` matches if HMAC-SHA1(salt, name) equals hash;
//! - `@revoked` keys are refused whatever else the files say;
//! - `@cert-authority` lines vouch for host certificates only, never for a
//!   plain host key ([`check_certificate`]): the certificate must be signed
//!   by such a CA, be a host certificate, name the host among its
//!   principals (or name none), be within its validity and carry no
//!   critical option; a revoked certificate key or CA is refused;
//! - a key that differs from a listed key of the same type is a *change*.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::{HashAlg, PublicKey};
use sha1::Sha1;

/// Where a known_hosts line came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// The outcome of checking a host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A line lists this key for this host.
    Trusted(Location),
    /// No line lists any key of this type for this host.
    Unknown,
    /// A line lists a different key of the same type for this host.
    Changed {
        /// The line with the old key.
        at: Location,
        /// The old key's SHA256 fingerprint.
        known: String,
    },
    /// The key is marked `@revoked`.
    Revoked(Location),
}

/// The name OpenSSH looks up for a host and port.
pub fn lookup_name(host: &str, port: u16) -> String {
    if port == 22 { host.to_string() } else { format!("[{host}]:{port}") }
}

/// The SHA256 fingerprint of a key, as `ssh-keygen -l` shows it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Checks `key` for `host`/`port` against every file in `files` (missing
/// files count as empty). A revocation anywhere wins; then a match; then a
/// change; else unknown.
#[cfg(test)]
fn check(files: &[PathBuf], host: &str, port: u16, key: &PublicKey) -> std::io::Result<Verdict> {
    Ok(check_texts(&read(files)?, host, port, key))
}

/// The contents of `files`, `(file, text)` in order; a missing file
/// counts as empty.
pub fn read(files: &[PathBuf]) -> std::io::Result<Vec<(PathBuf, String)>> {
    let mut texts = Vec::new();
    for file in files {
        match std::fs::read_to_string(file) {
            Ok(t) => texts.push((file.clone(), t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(texts)
}

/// [`check`] on known_hosts contents already read: `(file, text)`, in order.
pub fn check_texts(texts: &[(PathBuf, String)], host: &str, port: u16, key: &PublicKey) -> Verdict {
    let name = lookup_name(host, port).to_ascii_lowercase();
    let mut trusted = None;
    let mut changed = None;
    for (file, text) in texts {
        for (i, raw) in text.lines().enumerate() {
            let Some(entry) = Entry::parse(raw) else {
                continue;
            };
            if !entry.matches(&name) {
                continue;
            }
            let at = Location { file: file.clone(), line: i + 1 };
            let Ok(listed) = PublicKey::from_openssh(&format!("{} {}", entry.key_type, entry.key_b64)) else {
                continue;
            };
            let same = listed.key_data() == key.key_data();
            match entry.marker {
                Marker::Revoked if same => return Verdict::Revoked(at),
                Marker::Revoked | Marker::CertAuthority => {}
                Marker::None if same => {
                    trusted.get_or_insert(at);
                }
                Marker::None if listed.algorithm() == key.algorithm() => {
                    changed.get_or_insert(Verdict::Changed { at, known: fingerprint(&listed) });
                }
                Marker::None => {}
            }
        }
    }
    match (trusted, changed) {
        (Some(at), _) => Verdict::Trusted(at),
        (None, Some(c)) => c,
        (None, None) => Verdict::Unknown,
    }
}

/// The outcome of checking a host certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertVerdict {
    /// Signed by the CA at this line, and valid for this host now.
    Trusted(Location),
    /// No `@cert-authority` line names this host.
    NoAuthority,
    /// Its key or its CA is marked `@revoked`.
    Revoked(Location),
    /// Refused, and why.
    Refused(String),
}

/// Whether an `@cert-authority` line names `host`/`port`: then host
/// certificates are asked for.
pub fn has_authority(texts: &[(PathBuf, String)], host: &str, port: u16) -> bool {
    let name = lookup_name(host, port).to_ascii_lowercase();
    texts.iter().any(|(_, text)| {
        text.lines().filter_map(Entry::parse).any(|e| e.marker == Marker::CertAuthority && e.matches(&name))
    })
}

/// Checks a host certificate for `host`/`port` at `now` (Unix seconds)
/// against known_hosts contents ([`read`]). The principal looked for is
/// `host` (a HostKeyAlias, or the host name without the port), as OpenSSH
/// checks it.
pub fn check_certificate(
    texts: &[(PathBuf, String)],
    host: &str,
    port: u16,
    cert: &russh::keys::Certificate,
    now: u64,
) -> CertVerdict {
    let name = lookup_name(host, port).to_ascii_lowercase();
    let mut authorities = Vec::new();
    for (file, text) in texts {
        for (i, raw) in text.lines().enumerate() {
            let Some(entry) = Entry::parse(raw) else {
                continue;
            };
            if entry.marker == Marker::None || !entry.matches(&name) {
                continue;
            }
            let Ok(listed) = PublicKey::from_openssh(&format!("{} {}", entry.key_type, entry.key_b64)) else {
                continue;
            };
            let at = Location { file: file.clone(), line: i + 1 };
            match entry.marker {
                Marker::Revoked
                    if listed.key_data() == cert.public_key() || listed.key_data() == cert.signature_key() =>
                {
                    return CertVerdict::Revoked(at);
                }
                Marker::CertAuthority => authorities.push((listed, at)),
                _ => {}
            }
        }
    }
    if authorities.is_empty() {
        return CertVerdict::NoAuthority;
    }
    let ca = PublicKey::new(cert.signature_key().clone(), "");
    let Some((_, at)) = authorities.iter().find(|(k, _)| k.key_data() == cert.signature_key()) else {
        return CertVerdict::Refused(format!(
            "its certificate is signed by CA {}, which no @cert-authority line for {name} lists",
            fingerprint(&ca)
        ));
    };
    let refused = |why: String| CertVerdict::Refused(format!("its certificate (\"{}\") {why}", cert.key_id()));
    if cert.verify_signature().is_err() {
        return refused(format!("does not verify against CA {}", fingerprint(&ca)));
    }
    if cert.cert_type() != russh::keys::ssh_key::certificate::CertType::Host {
        return refused("is a user certificate, not a host certificate".into());
    }
    let principals = cert.valid_principals();
    if !principals.is_empty() && !principals.iter().any(|p| p.eq_ignore_ascii_case(host)) {
        return refused(format!("is for {}, not for {host}", principals.join(", ")));
    }
    if now < cert.valid_after() {
        return refused(format!("is not valid before {}", unix_time(cert.valid_after())));
    }
    if now >= cert.valid_before() {
        return refused(format!("expired at {}", unix_time(cert.valid_before())));
    }
    if let Some((option, _)) = cert.critical_options().iter().next() {
        return refused(format!("carries the critical option {option:?}, which sshmail does not know"));
    }
    CertVerdict::Trusted(at.clone())
}

/// Unix seconds as UTC `YYYY-MM-DD HH:MM:SS`, for messages.
fn unix_time(secs: u64) -> String {
    match chrono::DateTime::from_timestamp(i64::try_from(secs).unwrap_or(i64::MAX), 0) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => "the end of time".into(),
    }
}

/// The key types the trusted lines of known_hosts contents ([`read`])
/// hold for `host`/`port` (`@revoked` and `@cert-authority` lines aside),
/// in the order they stand.
pub fn known_types(texts: &[(PathBuf, String)], host: &str, port: u16) -> Vec<String> {
    let name = lookup_name(host, port).to_ascii_lowercase();
    let mut types: Vec<String> = Vec::new();
    for (_, text) in texts {
        for entry in text.lines().filter_map(Entry::parse) {
            if entry.marker == Marker::None && entry.matches(&name) && !types.iter().any(|t| t == entry.key_type) {
                types.push(entry.key_type.to_string());
            }
        }
    }
    types
}

/// Appends a hashed line for `host`/`port` with `key` to `file`, creating it
/// (and its directory) with private permissions.
pub fn append_hashed(file: &Path, host: &str, port: u16, key: &PublicKey) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut salt = [0u8; 20];
    getrandom::fill(&mut salt).map_err(std::io::Error::other)?;
    let line = hashed_line(host, port, key, &salt).map_err(std::io::Error::other)?;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(file)?;
    f.write_all(line.as_bytes())?;
    f.sync_all()
}

/// The hashed known_hosts line (`|1|salt|hash type key`, with its newline)
/// for `host`/`port` and `key`.
pub fn hashed_line(host: &str, port: u16, key: &PublicKey, salt: &[u8]) -> Result<String, russh::keys::ssh_key::Error> {
    let name = lookup_name(host, port).to_ascii_lowercase();
    let hash = hmac_sha1(salt, name.as_bytes());
    let key_text = key.to_openssh()?;
    let mut fields = key_text.split_whitespace();
    Ok(format!(
        "|1|{}|{} {} {}\n",
        B64.encode(salt),
        B64.encode(hash),
        fields.next().unwrap_or_default(),
        fields.next().unwrap_or_default()
    ))
}

#[derive(Debug, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

struct Entry<'a> {
    marker: Marker,
    patterns: &'a str,
    key_type: &'a str,
    key_b64: &'a str,
}

impl<'a> Entry<'a> {
    fn parse(line: &'a str) -> Option<Entry<'a>> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let mut fields = line.split_ascii_whitespace();
        let mut first = fields.next()?;
        let marker = match first {
            "@revoked" => Marker::Revoked,
            "@cert-authority" => Marker::CertAuthority,
            m if m.starts_with('@') => return None,
            _ => Marker::None,
        };
        if marker != Marker::None {
            first = fields.next()?;
        }
        Some(Entry { marker, patterns: first, key_type: fields.next()?, key_b64: fields.next()? })
    }

    /// True if the patterns select `name` (already lower-case).
    fn matches(&self, name: &str) -> bool {
        if let Some(hashed) = self.patterns.strip_prefix("|1|") {
            let Some((salt, hash)) = hashed.split_once('|') else {
                return false;
            };
            let (Ok(salt), Ok(hash)) = (B64.decode(salt), B64.decode(hash)) else {
                return false;
            };
            return hmac_sha1(&salt, name.as_bytes()).as_slice() == hash.as_slice();
        }
        let mut positive = false;
        for pat in self.patterns.split(',') {
            let (negated, pat) = match pat.strip_prefix('!') {
                Some(p) => (true, p),
                None => (false, pat),
            };
            if wildcard_match(&pat.to_ascii_lowercase(), name) {
                if negated {
                    return false;
                }
                positive = true;
            }
        }
        positive
    }
}

fn hmac_sha1(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// `*` and `?` glob matching, iterative with backtracking on the last `*`.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA4Wnf7809rafH7bywEj2PUgPB5vDgYnByf99vRcZ5T4";
    const KEY_B: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMIlZZ7rOlsmTEybyZKcsB/qDTZdMJuxMRwZP+rLasQS";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    fn check_text(text: &str, host: &str, port: u16, k: &str) -> Verdict {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("known_hosts");
        std::fs::write(&f, text).unwrap();
        let v = check(std::slice::from_ref(&f), host, port, &key(k)).unwrap();
        // Locations name a temp file; compare line numbers only.
        match v {
            Verdict::Trusted(at) => Verdict::Trusted(Location { file: PathBuf::new(), line: at.line }),
            Verdict::Revoked(at) => Verdict::Revoked(Location { file: PathBuf::new(), line: at.line }),
            Verdict::Changed { at, known } => {
                Verdict::Changed { at: Location { file: PathBuf::new(), line: at.line }, known }
            }
            Verdict::Unknown => Verdict::Unknown,
        }
    }

    fn at(line: usize) -> Location {
        Location { file: PathBuf::new(), line }
    }

    #[test]
    fn plain_and_port_entries() {
        assert_eq!(
            check_text(&format!("mail.example.org {KEY_A}\n"), "mail.example.org", 22, KEY_A),
            Verdict::Trusted(at(1))
        );
        assert_eq!(
            check_text(&format!("mail.example.org {KEY_A}\n"), "mail.example.org", 2222, KEY_A),
            Verdict::Unknown
        );
        assert_eq!(
            check_text(&format!("# c\n[mail.example.org]:2222 {KEY_A}\n"), "mail.example.org", 2222, KEY_A),
            Verdict::Trusted(at(2))
        );
        assert_eq!(
            check_text(&format!("MAIL.Example.org\t{KEY_A}\n"), "mail.example.org", 22, KEY_A),
            Verdict::Trusted(at(1))
        );
    }

    #[test]
    fn wildcards_and_negation() {
        let text = format!("*.example.org,!bad.example.org {KEY_A}\n");
        assert_eq!(check_text(&text, "mail.example.org", 22, KEY_A), Verdict::Trusted(at(1)));
        assert_eq!(check_text(&text, "bad.example.org", 22, KEY_A), Verdict::Unknown);
        assert_eq!(
            check_text(&format!("ma?l.example.org {KEY_A}\n"), "mail.example.org", 22, KEY_A),
            Verdict::Trusted(at(1))
        );
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match("a*b*c", "aXXbYYc"));
        assert!(!wildcard_match("a*b*c", "aXXbYY"));
    }

    #[test]
    fn host_keys_are_verified_changed_key_is_refused() {
        let text = format!("mail.example.org {KEY_A}\n");
        match check_text(&text, "mail.example.org", 22, KEY_B) {
            Verdict::Changed { at: loc, known } => {
                assert_eq!(loc.line, 1);
                assert_eq!(known, fingerprint(&key(KEY_A)));
            }
            v => panic!("expected Changed, got {v:?}"),
        }
    }

    #[test]
    fn host_keys_are_verified_revoked_wins_over_plain_line() {
        let text = format!("mail.example.org {KEY_A}\n@revoked * {KEY_A}\n");
        assert_eq!(check_text(&text, "mail.example.org", 22, KEY_A), Verdict::Revoked(at(2)));
    }

    #[test]
    fn cert_authority_does_not_vouch_for_plain_keys() {
        let text = format!("@cert-authority *.example.org {KEY_A}\n");
        assert_eq!(check_text(&text, "mail.example.org", 22, KEY_A), Verdict::Unknown);
    }

    #[test]
    fn hashed_entries_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sub/known_hosts");
        append_hashed(&f, "127.0.0.1", 2022, &key(KEY_A)).unwrap();
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.starts_with("|1|") && !text.contains("127.0.0.1"), "{text}");
        let files = [f];
        assert!(matches!(check(&files, "127.0.0.1", 2022, &key(KEY_A)).unwrap(), Verdict::Trusted(_)));
        assert_eq!(check(&files, "127.0.0.1", 22, &key(KEY_A)).unwrap(), Verdict::Unknown);
        assert!(matches!(check(&files, "127.0.0.1", 2022, &key(KEY_B)).unwrap(), Verdict::Changed { .. }));
    }

    #[test]
    fn openssh_hashed_line_matches() {
        // Made by `ssh-keygen -H` from the line "mail.example.org KEY_A".
        let text = format!("|1|IIXKY3Z82CyygdIDYF3TS5MNpBo=|ffC9vexcjCn09at/FOALH0fMKbw= {KEY_A}\n");
        assert_eq!(check_text(&text, "mail.example.org", 22, KEY_A), Verdict::Trusted(at(1)));
        assert_eq!(check_text(&text, "other.example.org", 22, KEY_A), Verdict::Unknown);
        assert!(matches!(check_text(&text, "mail.example.org", 22, KEY_B), Verdict::Changed { .. }));
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let text = format!("@weird x y z\nnot-a-line\nmail.example.org ssh-ed25519 !!!!\nmail.example.org {KEY_A}\n");
        assert_eq!(check_text(&text, "mail.example.org", 22, KEY_A), Verdict::Trusted(at(4)));
    }
}
