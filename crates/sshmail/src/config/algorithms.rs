//! The SSH algorithms a connection offers.
//!
//! sshmail's defaults are OpenSSH's choices among what russh implements:
//! no SHA-1 `ssh-rsa` host keys, ECDH over NIST curves last, every AES mode
//! OpenSSH offers (AES-GCM first where the CPU has AES instructions).
//! `~/.ssh/config`'s KexAlgorithms, Ciphers, MACs, HostKeyAlgorithms and
//! PubkeyAcceptedAlgorithms change them as OpenSSH reads them: a whole
//! list, or `+` appended, `-` removed, `^` put first. The defaults are
//! handed to the ssh_config parser ([`defaults`]), which applies those forms
//! to them; [`Algorithms::of`] keeps what russh implements.

use russh::keys::Algorithm;
use russh::{cipher, kex, mac};

use crate::error::{Error, Result};

/// Key exchange, in order; ECDH over NIST curves last.
const KEX: &[&str] = &[
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "diffie-hellman-group-exchange-sha256",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group17-sha512",
    "diffie-hellman-group15-sha512",
    "diffie-hellman-group14-sha256",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
];

/// Not algorithms: announcements every client key exchange list carries
/// (RFC 8308 extension negotiation, OpenSSH's strict key exchange).
const KEX_MARKERS: &[kex::Name] = &[
    kex::EXTENSION_SUPPORT_AS_CLIENT,
    kex::EXTENSION_SUPPORT_AS_SERVER,
    kex::EXTENSION_OPENSSH_STRICT_KEX_AS_CLIENT,
    kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
];

/// Ciphers where the CPU has AES instructions: AES-GCM is then measurably
/// faster than chacha20-poly1305 for bulk transfer.
const CIPHERS_AES_NI: &[&str] = &[
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
];

/// Ciphers elsewhere.
const CIPHERS: &[&str] = &[
    "chacha20-poly1305@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
];

/// MACs (used only with the CTR ciphers), SHA-1 last as in OpenSSH.
const MACS: &[&str] = &[
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
    "hmac-sha1-etm@openssh.com",
    "hmac-sha1",
];

/// Host key and user key signature algorithms. `ssh-rsa` (RSA signed
/// with SHA-1) is not among them: OpenSSH 8.8 and later refuse it unless
/// asked (`HostKeyAlgorithms +ssh-rsa`).
const KEYS: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
];

/// Whether sshmail can verify or sign with the key algorithm `name`:
/// those of [`KEYS`], and SHA-1 `ssh-rsa`.
fn key_implemented(name: &str) -> bool {
    KEYS.contains(&name) || name == "ssh-rsa"
}

/// The defaults, for the ssh_config parser to apply `+`, `-` and `^` to.
pub fn defaults() -> ssh2_config::DefaultAlgorithms {
    let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    ssh2_config::DefaultAlgorithms {
        ca_signature_algorithms: names(KEYS),
        ciphers: names(default_ciphers()),
        host_key_algorithms: names(KEYS),
        kex_algorithms: names(KEX),
        mac: names(MACS),
        pubkey_accepted_algorithms: names(KEYS),
    }
}

fn default_ciphers() -> &'static [&'static str] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("aes") {
        return CIPHERS_AES_NI;
    }
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("aes") {
        return CIPHERS_AES_NI;
    }
    CIPHERS
}

/// What one connection offers, in order of preference.
#[derive(Debug, Clone, PartialEq)]
pub struct Algorithms {
    /// Key exchange (KexAlgorithms).
    pub kex: Vec<kex::Name>,
    /// Ciphers.
    pub cipher: Vec<cipher::Name>,
    /// MACs.
    pub mac: Vec<mac::Name>,
    /// Host key algorithms (HostKeyAlgorithms).
    pub host_key: Vec<Algorithm>,
    /// HostKeyAlgorithms was left as it is: the connection puts the key
    /// types known_hosts holds for the host first, as OpenSSH does.
    pub host_key_default: bool,
    /// Signature algorithms for our own keys (PubkeyAcceptedAlgorithms).
    pub pubkey: Vec<Algorithm>,
    /// PubkeyAcceptedAlgorithms was left as it is: an RSA key may sign
    /// with SHA-1 (`ssh-rsa`) for a server that knows nothing better.
    pub pubkey_default: bool,
    /// Names ssh_config asked for that sshmail does not implement (they
    /// are left out), for doctor and error messages.
    pub unimplemented: Vec<String>,
}

impl Default for Algorithms {
    fn default() -> Self {
        let d = defaults();
        Algorithms::from_names(
            &d.kex_algorithms,
            &d.ciphers,
            &d.mac,
            (&d.host_key_algorithms, true),
            (&d.pubkey_accepted_algorithms, true),
            "",
        )
        .expect("the defaults are implemented")
    }
}

impl Algorithms {
    /// The algorithms ssh_config gives `host` (parsed with [`defaults`]).
    pub fn of(params: &ssh2_config::HostParams, host: &str) -> Result<Algorithms> {
        Algorithms::from_names(
            params.kex_algorithms.algorithms(),
            params.ciphers.algorithms(),
            params.mac.algorithms(),
            (params.host_key_algorithms.algorithms(), params.host_key_algorithms.is_default()),
            (params.pubkey_accepted_algorithms.algorithms(), params.pubkey_accepted_algorithms.is_default()),
            host,
        )
    }

    fn from_names(
        kex: &[String],
        ciphers: &[String],
        macs: &[String],
        (host_keys, host_key_default): (&[String], bool),
        (pubkeys, pubkey_default): (&[String], bool),
        host: &str,
    ) -> Result<Algorithms> {
        let mut unimplemented = Vec::new();
        let mut kex = keep(kex, "KexAlgorithms", host, &mut unimplemented, |n| {
            kex::Name::try_from(n).ok().filter(|k| !KEX_MARKERS.contains(k) && *k != kex::NONE)
        })?;
        kex.extend_from_slice(KEX_MARKERS);
        let cipher = keep(ciphers, "Ciphers", host, &mut unimplemented, |n| {
            cipher::Name::try_from(n).ok().filter(|c| *c != cipher::NONE && *c != cipher::CLEAR)
        })?;
        let mac =
            keep(macs, "MACs", host, &mut unimplemented, |n| mac::Name::try_from(n).ok().filter(|m| *m != mac::NONE))?;
        let key = |n: &str| key_implemented(n).then(|| Algorithm::new(n).ok()).flatten();
        let host_key = keep(host_keys, "HostKeyAlgorithms", host, &mut unimplemented, key)?;
        let pubkey = keep(pubkeys, "PubkeyAcceptedAlgorithms", host, &mut unimplemented, key)?;
        Ok(Algorithms { kex, cipher, mac, host_key, host_key_default, pubkey, pubkey_default, unimplemented })
    }
}

/// The names `parse` knows, without duplicates, in order; the others are
/// noted in `unimplemented`. None left is an error naming the directive.
fn keep<T: PartialEq>(
    names: &[String],
    directive: &str,
    host: &str,
    unimplemented: &mut Vec<String>,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for name in names {
        match parse(name) {
            Some(t) if !out.contains(&t) => out.push(t),
            Some(_) => {}
            None => unimplemented.push(format!("{directive} {name}")),
        }
    }
    if out.is_empty() {
        return Err(Error::Config(format!(
            "~/.ssh/config: {directive} for {host} allows only {}, none of which sshmail implements; \
             add one it has ({})",
            if names.is_empty() { "nothing".to_string() } else { names.join(",") },
            implemented(directive).join(",")
        )));
    }
    Ok(out)
}

/// What sshmail implements for `directive`, for messages.
pub fn implemented(directive: &str) -> Vec<String> {
    let names = |list: &[&'static kex::Name]| list.iter().map(|n| n.as_ref().to_string()).collect::<Vec<_>>();
    match directive {
        "KexAlgorithms" => names(kex::ALL_KEX_ALGORITHMS).into_iter().filter(|n| n != "none").collect(),
        "Ciphers" => {
            cipher::ALL_CIPHERS.iter().map(|n| n.as_ref().to_string()).filter(|n| n != "none" && n != "clear").collect()
        }
        "MACs" => mac::ALL_MAC_ALGORITHMS.iter().map(|n| n.as_ref().to_string()).filter(|n| n != "none").collect(),
        _ => KEYS.iter().chain(&["ssh-rsa"]).map(|s| s.to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ssh2_config::SshConfig {
        ssh2_config::SshConfig::default()
            .default_algorithms(defaults())
            .parse(
                &mut text.as_bytes(),
                ssh2_config::ParseRule::ALLOW_UNKNOWN_FIELDS | ssh2_config::ParseRule::ALLOW_UNSUPPORTED_FIELDS,
            )
            .unwrap()
    }

    #[test]
    fn every_default_name_is_one_russh_implements() {
        let all = Algorithms::default();
        assert_eq!(all.kex.len(), KEX.len() + KEX_MARKERS.len());
        assert_eq!(all.cipher.len(), CIPHERS.len());
        assert_eq!(all.mac.len(), MACS.len());
        assert_eq!(all.host_key.len(), KEYS.len());
        assert!(all.unimplemented.is_empty());
        assert!(!all.host_key.contains(&Algorithm::Rsa { hash: None }), "no SHA-1 host keys by default");
        assert_eq!(all.kex.iter().position(|k| *k == kex::ECDH_SHA2_NISTP256), Some(KEX.len() - 3), "ECDH last");
    }

    #[test]
    fn ssh_config_sets_appends_removes_and_puts_first() {
        let cfg = parse(
            "Host old\n  HostKeyAlgorithms +ssh-rsa\n  Ciphers ^aes128-ctr\n  MACs -hmac-sha1,hmac-sha1-etm@openssh.com\n\
             Host fixed\n  KexAlgorithms sntrup761x25519-sha512@openssh.com,curve25519-sha256\n  PubkeyAcceptedAlgorithms ssh-rsa\n",
        );
        let old = Algorithms::of(&cfg.query("old"), "old").unwrap();
        assert_eq!(old.host_key.last(), Some(&Algorithm::Rsa { hash: None }));
        assert!(!old.host_key_default && old.pubkey_default);
        assert_eq!(old.cipher[0], cipher::AES_128_CTR);
        assert_eq!(old.cipher.iter().filter(|c| **c == cipher::AES_128_CTR).count(), 1, "no duplicates");
        assert!(!old.mac.contains(&mac::HMAC_SHA1) && old.mac.len() == MACS.len() - 2);
        let fixed = Algorithms::of(&cfg.query("fixed"), "fixed").unwrap();
        assert_eq!(fixed.kex[0], kex::CURVE25519);
        assert_eq!(fixed.kex.len(), 1 + KEX_MARKERS.len());
        assert_eq!(fixed.unimplemented, ["KexAlgorithms sntrup761x25519-sha512@openssh.com"]);
        assert_eq!(fixed.pubkey, [Algorithm::Rsa { hash: None }]);
        assert!(!fixed.pubkey_default);
    }

    #[test]
    fn a_list_of_nothing_sshmail_implements_is_a_config_error_naming_it() {
        let cfg = parse("Host pq\n  KexAlgorithms sntrup761x25519-sha512@openssh.com\n");
        let e = Algorithms::of(&cfg.query("pq"), "pq").unwrap_err().to_string();
        assert!(e.contains("KexAlgorithms for pq allows only sntrup761x25519-sha512@openssh.com"), "{e}");
        assert!(e.contains("curve25519-sha256"), "{e}");
    }
}
