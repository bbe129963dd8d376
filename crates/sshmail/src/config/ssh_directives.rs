//! What sshmail does with each `~/.ssh/config` directive: the one list
//! that `doctor`'s warnings and the README's table follow (a test holds the
//! README to it).

/// How a directive is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// Read and honoured as OpenSSH does.
    Honoured,
    /// Read but not honoured: `doctor` warns, saying what sshmail does
    /// instead.
    Instead(&'static str),
    /// About interactive sessions, forwarding or the terminal: nothing a
    /// mail connection does.
    NotApplicable,
}

use Treatment::{Honoured, Instead, NotApplicable};

/// Every directive of OpenSSH 9's ssh_config(5), as OpenSSH spells it.
pub const DIRECTIVES: &[(&str, Treatment)] = &[
    ("AddKeysToAgent", NotApplicable),
    ("AddressFamily", Instead("tries every address the name resolves to, IPv4 and IPv6")),
    ("BatchMode", Instead("asks only when run on a terminal; the daemon never asks")),
    ("BindAddress", Instead("connects from the address the system chooses")),
    ("BindInterface", Instead("connects through the interface the system chooses")),
    ("CanonicalDomains", Instead("uses the host name as given (no canonicalization)")),
    ("CanonicalizeFallbackLocal", Instead("uses the host name as given (no canonicalization)")),
    ("CanonicalizeHostname", Instead("uses the host name as given (no canonicalization)")),
    ("CanonicalizeMaxDots", Instead("uses the host name as given (no canonicalization)")),
    ("CanonicalizePermittedCNAMEs", Instead("uses the host name as given (no canonicalization)")),
    ("CASignatureAlgorithms", Instead("accepts a certificate signed with any algorithm it implements")),
    ("CertificateFile", Honoured),
    ("ChannelTimeout", Instead("keeps channels open while the daemon needs them")),
    ("CheckHostIP", Instead("checks the host key under the host name (or HostKeyAlias) only")),
    ("Ciphers", Honoured),
    ("ClearAllForwardings", NotApplicable),
    ("Compression", Honoured),
    ("ConnectionAttempts", Instead("connects once per try; the daemon tries again with back-off")),
    ("ConnectTimeout", Honoured),
    ("ControlMaster", Instead("rides a master that runs at ControlPath, but never starts one")),
    ("ControlPath", Honoured),
    ("ControlPersist", Instead("rides a master that runs at ControlPath, but never starts one")),
    ("DynamicForward", NotApplicable),
    ("EnableEscapeCommandline", NotApplicable),
    ("EnableSSHKeysign", Instead("has no host-based authentication")),
    ("EscapeChar", NotApplicable),
    ("ExitOnForwardFailure", NotApplicable),
    ("FingerprintHash", Instead("shows SHA256 fingerprints")),
    ("ForkAfterAuthentication", NotApplicable),
    ("ForwardAgent", NotApplicable),
    ("ForwardX11", NotApplicable),
    ("ForwardX11Timeout", NotApplicable),
    ("ForwardX11Trusted", NotApplicable),
    ("GatewayPorts", NotApplicable),
    ("GlobalKnownHostsFile", Instead("reads /etc/ssh/ssh_known_hosts as the system-wide file")),
    ("GSSAPIAuthentication", Instead("has no GSSAPI/Kerberos: ride an OpenSSH master that logged in with it")),
    ("GSSAPIDelegateCredentials", Instead("has no GSSAPI/Kerberos")),
    ("HashKnownHosts", Instead("always writes hashed known_hosts lines")),
    ("Host", Honoured),
    ("HostbasedAcceptedAlgorithms", Instead("has no host-based authentication")),
    ("HostbasedAuthentication", Instead("has no host-based authentication")),
    ("HostKeyAlgorithms", Honoured),
    ("HostKeyAlias", Honoured),
    ("HostName", Honoured),
    ("IdentitiesOnly", Honoured),
    ("IdentityAgent", Honoured),
    ("IdentityFile", Honoured),
    ("IgnoreUnknown", Honoured),
    ("Include", Honoured),
    ("IPQoS", NotApplicable),
    (
        "KbdInteractiveAuthentication",
        Instead("answers keyboard-interactive when the server asks and an answer is at hand"),
    ),
    ("KbdInteractiveDevices", Instead("asks the server's default devices")),
    ("KexAlgorithms", Honoured),
    ("KnownHostsCommand", Instead("reads the known_hosts files only; the command is not run")),
    ("LocalCommand", NotApplicable),
    ("LocalForward", NotApplicable),
    ("LogLevel", Instead("logs as `-v`, `-q` and SSHMAIL_LOG say")),
    ("LogVerbose", NotApplicable),
    ("MACs", Honoured),
    ("Match", Honoured),
    ("NoHostAuthenticationForLocalhost", Instead("checks the host key of localhost too")),
    ("NumberOfPasswordPrompts", Instead("asks a password up to 3 times on a terminal")),
    ("ObscureKeystrokeTiming", NotApplicable),
    ("PasswordAuthentication", Instead("sends a password when the server asks and one is at hand")),
    ("PermitLocalCommand", NotApplicable),
    ("PermitRemoteOpen", NotApplicable),
    ("PKCS11Provider", Instead("has no PKCS#11: load such keys into the agent")),
    ("Port", Honoured),
    (
        "PreferredAuthentications",
        Instead("tries keys, then keyboard-interactive, then a password, as the server allows"),
    ),
    ("ProxyCommand", Honoured),
    ("ProxyJump", Honoured),
    ("ProxyUseFdpass", Instead("runs ProxyCommand as a stream")),
    ("PubkeyAcceptedAlgorithms", Honoured),
    ("PubkeyAuthentication", Instead("offers keys whenever it has them")),
    ("RekeyLimit", Instead("rekeys at russh's default limits")),
    ("RemoteCommand", NotApplicable),
    ("RemoteForward", NotApplicable),
    ("RequestTTY", NotApplicable),
    ("RequiredRSASize", Instead("takes RSA keys of any size russh accepts")),
    ("RevokedHostKeys", Instead("honours @revoked lines in known_hosts; the file named here is not read")),
    ("SecurityKeyProvider", Instead("has no FIDO keys of its own: load them into the agent")),
    ("SendEnv", NotApplicable),
    ("ServerAliveCountMax", Honoured),
    ("ServerAliveInterval", Honoured),
    ("SessionType", NotApplicable),
    ("SetEnv", NotApplicable),
    ("StdinNull", NotApplicable),
    ("StreamLocalBindMask", NotApplicable),
    ("StreamLocalBindUnlink", NotApplicable),
    ("StrictHostKeyChecking", Honoured),
    ("SyslogFacility", NotApplicable),
    ("Tag", NotApplicable),
    ("TCPKeepAlive", NotApplicable),
    ("Tunnel", NotApplicable),
    ("TunnelDevice", NotApplicable),
    ("UpdateHostKeys", Honoured),
    ("User", Honoured),
    ("UserKnownHostsFile", Honoured),
    ("VerifyHostKeyDNS", Instead("does not look up SSHFP records")),
    ("VisualHostKey", NotApplicable),
    ("XAuthLocation", NotApplicable),
];

/// How `directive` (any case) is treated; None: not an OpenSSH directive.
pub fn treatment(directive: &str) -> Option<(&'static str, Treatment)> {
    DIRECTIVES.iter().find(|(d, _)| d.eq_ignore_ascii_case(directive)).copied()
}

/// The directives set for a host that sshmail reads but does not honour,
/// with what it does instead, in the table's order.
pub fn unhonoured(params: &ssh2_config::HostParams) -> Vec<(&'static str, &'static str)> {
    let typed: [(&str, bool); 5] = [
        ("BindAddress", params.bind_address.is_some()),
        ("BindInterface", params.bind_interface.is_some()),
        ("CASignatureAlgorithms", !params.ca_signature_algorithms.is_default()),
        ("ConnectionAttempts", params.connection_attempts.is_some()),
        ("PubkeyAuthentication", params.pubkey_authentication == Some(false)),
    ];
    let set = |d: &str| {
        typed.iter().any(|(t, on)| *on && t.eq_ignore_ascii_case(d))
            || params.unsupported_fields.keys().any(|k| k.eq_ignore_ascii_case(d))
            || params.ignored_fields.keys().any(|k| k.eq_ignore_ascii_case(d))
    };
    DIRECTIVES
        .iter()
        .filter_map(|(d, t)| match t {
            Instead(what) if set(d) => Some((*d, *what)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_are_listed_once_in_order() {
        for pair in DIRECTIVES.windows(2) {
            assert!(pair[0].0.to_ascii_lowercase() < pair[1].0.to_ascii_lowercase(), "{:?}", pair);
        }
    }

    /// The README's table lists every directive as this table treats it,
    /// and nothing else.
    #[test]
    fn the_readme_lists_every_ssh_config_directive_as_sshmail_treats_it() {
        let readme = include_str!("../../../../README.md");
        let treated = |l: &str| {
            ["| honoured |", "| **not honoured**: ", "| not applicable to mail |"].iter().any(|t| l.contains(t))
        };
        let rows: Vec<&str> = readme.lines().filter(|l| l.starts_with("| `") && treated(l)).collect();
        for (name, t) in DIRECTIVES {
            let shown = match t {
                Honoured => "honoured".to_string(),
                NotApplicable => "not applicable to mail".to_string(),
                Instead(what) => format!("**not honoured**: sshmail {what}"),
            };
            let row = format!("| `{name}` | {shown} |");
            assert!(rows.contains(&row.as_str()), "README lacks: {row}");
        }
        assert_eq!(rows.len(), DIRECTIVES.len(), "README rows not in the table: {rows:?}");
    }

    #[test]
    fn a_directive_read_but_not_honoured_is_named_with_what_sshmail_does_instead() {
        let cfg = ssh2_config::SshConfig::default()
            .parse(
                &mut "Host mail\n  ControlMaster auto\n  ControlPath ~/.ssh/cm-%C\n  BindAddress 10.0.0.1\n  ForwardX11 yes\n  VerifyHostKeyDNS yes\n  HostKeyAlias m\n"
                    .as_bytes(),
                ssh2_config::ParseRule::ALLOW_UNKNOWN_FIELDS | ssh2_config::ParseRule::ALLOW_UNSUPPORTED_FIELDS,
            )
            .unwrap();
        let names: Vec<&str> = unhonoured(&cfg.query("mail")).iter().map(|(d, _)| *d).collect();
        assert_eq!(names, ["BindAddress", "ControlMaster", "VerifyHostKeyDNS"]);
        assert_eq!(treatment("hostkeyalias"), Some(("HostKeyAlias", Honoured)));
    }
}
