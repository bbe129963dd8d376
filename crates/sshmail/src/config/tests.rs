use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use super::*;
use crate::error::Error;

#[test]
fn parses_destinations() {
    let d = SshDestination::parse("me@shell.example.org:2222").unwrap();
    assert_eq!((d.user.as_deref(), d.host.as_str(), d.port), (Some("me"), "shell.example.org", Some(2222)));
    let d = SshDestination::parse("host").unwrap();
    assert_eq!((d.user, d.host.as_str(), d.port), (None, "host", None));
    let d = SshDestination::parse("[::1]:22").unwrap();
    assert_eq!((d.host.as_str(), d.port), ("::1", Some(22)));
    assert!(SshDestination::parse("@host").is_err());
    assert!(SshDestination::parse("host:notaport").is_err());
}

#[test]
fn resolves_with_defaults() {
    let raw: RawConfig =
        toml::from_str("[account.work]\nssh = \"me@shell\"\npassword_command = [\"pass\", \"show\", \"mail\"]\n")
            .unwrap();
    let a = resolve("work", &raw.account["work"], &Resolving { state_dir: Some("/tmp/st"), ..Resolving::default() })
        .unwrap();
    assert_eq!((a.route.server_host.as_str(), a.route.server_port, a.login.user.as_str()), ("localhost", 110, "me"));
    assert!(a.fetch.policy == Policy::Delete && !a.route.ssh.as_ref().unwrap().0.compress);
    assert_eq!(a.route.timeout, Duration::from_secs(30));
    assert!(matches!(a.login.password, PasswordSource::Command(Command::Argv(_))));
}

#[test]
fn imap_defaults_to_exec_and_transports_pick_ports() {
    let raw = RawAccount { ssh: Some("h".into()), protocol: Some("imap".into()), ..Default::default() };
    let a = resolve("a", &raw, &Resolving::default()).unwrap();
    assert_eq!(
        (a.route.via.clone(), a.fetch.folders.clone(), a.fetch.policy),
        (Via::Exec(None), vec!["INBOX".to_string()], Policy::Delete)
    );
    let raw = RawAccount {
        protocol: Some("imap".into()),
        via: Some("tls".into()),
        server: Some("imap.example.org".into()),
        keep: Some(true),
        ..Default::default()
    };
    let a = resolve("a", &raw, &Resolving::default()).unwrap();
    assert_eq!((a.route.server_port, a.fetch.policy), (993, Policy::Keep));
    let raw = RawAccount {
        protocol: Some("imap".into()),
        tunnel: Some(Command::Argv(vec!["ssh".into(), "h".into(), "imapd".into()])),
        ..Default::default()
    };
    assert!(matches!(resolve("a", &raw, &Resolving::default()).unwrap().route.via, Via::Command(_)));
}

#[test]
fn the_readme_config_example_is_valid() {
    let readme = include_str!("../../../../README.md");
    let start = readme.find("```toml\n").expect("README has a TOML example") + 8;
    let end = start + readme[start..].find("```").expect("closed");
    let raw: RawConfig = toml::from_str(&readme[start..end]).expect("README example parses");
    assert!(raw.account.len() >= 3);
    for (name, account) in &raw.account {
        resolve(name, account, &Resolving::default()).unwrap_or_else(|e| panic!("README account {name}: {e}"));
    }
    let uni = resolve("uni", &raw.account["uni"], &Resolving::default()).unwrap();
    assert_eq!((uni.protocol, uni.fetch.policy), (Protocol::Imap, Policy::Seen));
    assert!(matches!(uni.route.via, Via::Exec(Some(_))));
}

/// Every TOML example in the README (the gateway's and the sender's too).
#[test]
fn every_readme_toml_example_is_valid() {
    let readme = include_str!("../../../../README.md");
    let mut blocks = 0;
    for part in readme.split("```toml\n").skip(1) {
        let text = &part[..part.find("```").expect("closed")];
        // Without a runtime directory here, a fixed one stands in.
        let text = match runtime_base() {
            Some(_) => text.to_string(),
            None => text.replace("$XDG_RUNTIME_DIR", "/run/user/1000"),
        };
        let raw: RawConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("README example: {e}\n{text}"));
        for (name, account) in &raw.account {
            if let Err(e) = resolve(name, account, &Resolving::default()) {
                panic!("README account {name}: {e}");
            }
        }
        blocks += 1;
    }
    assert!(blocks >= 3, "the README's examples: {blocks}");
}

#[test]
fn delivery_specs() {
    assert_eq!(parse_delivery("mbox:/var/mail/me").unwrap(), Delivery::Mbox("/var/mail/me".into()));
    assert_eq!(parse_delivery("mda:procmail -d %T").unwrap(), Delivery::Mda("procmail -d %T".into()));
    assert_eq!(parse_delivery("smtp:").unwrap(), Delivery::Smtp(Endpoint::Tcp("localhost".into(), 25)));
    assert_eq!(parse_delivery("smtp:mx:2525").unwrap(), Delivery::Smtp(Endpoint::Tcp("mx".into(), 2525)));
    assert_eq!(parse_delivery("lmtp:127.0.0.1:24").unwrap(), Delivery::Lmtp(Endpoint::Tcp("127.0.0.1".into(), 24)));
    assert_eq!(
        parse_delivery("lmtp:/run/dovecot/lmtp").unwrap(),
        Delivery::Lmtp(Endpoint::Unix("/run/dovecot/lmtp".into()))
    );
    for bad in ["lmtp:host", "mbox:", "mda:", "pipe:x", "maildir"] {
        assert!(parse_delivery(bad).is_err(), "{bad}");
    }
}

#[test]
fn rejects_unknown_keys_and_values() {
    assert!(toml::from_str::<RawConfig>("[account.a]\nssh = \"h\"\npasword = \"x\"\n").is_err());
    let raw = RawAccount { ssh: Some("h".into()), protocol: Some("smtp".into()), ..Default::default() };
    let e = resolve("a", &raw, &Resolving::default()).unwrap_err().to_string();
    assert!(e.contains("unknown protocol"), "{e}");
    let raw = RawAccount { ssh: Some("h".into()), policy: Some("seen".into()), ..Default::default() };
    assert!(resolve("a", &raw, &Resolving::default()).is_err(), "seen is IMAP only");
    let raw = RawAccount { via: Some("tls".into()), protocol: Some("imap".into()), ..Default::default() };
    assert!(resolve("a", &raw, &Resolving::default()).is_err(), "TLS needs a server");
    let raw = RawAccount { ssh: Some("h".into()), deliver: Some("mbox".into()), ..Default::default() };
    assert!(resolve("a", &raw, &Resolving::default()).is_err());
}

#[test]
fn owner_only_endpoints_listen_addresses_beyond_loopback_need_the_opt_in() {
    let ok = |s: &str, open: bool| parse_listen(s, "serve.imap", open);
    assert_eq!(ok("tcp:127.0.0.1:1143", false).unwrap(), Listen::Tcp("127.0.0.1:1143".parse().unwrap()));
    assert_eq!(ok("tcp:localhost:1143", false).unwrap(), Listen::Tcp("127.0.0.1:1143".parse().unwrap()));
    assert_eq!(ok("tcp:[::1]:1143", false).unwrap(), Listen::Tcp("[::1]:1143".parse().unwrap()));
    for open in ["tcp:0.0.0.0:1143", "tcp:[::]:1143", "tcp:192.168.1.5:143"] {
        let e = ok(open, false).unwrap_err().to_string();
        assert!(e.contains("serve.open_to_network = true") && e.contains("other hosts"), "{e}");
        assert!(ok(open, true).is_ok(), "{open} with the opt-in");
    }
    for bad in ["tcp:imap.example.org:143", "tcp:127.0.0.1", "tcp:127.0.0.1:0", "udp:x", "unix:relative/sock"] {
        assert!(ok(bad, false).is_err(), "{bad}");
    }
    assert_eq!(ok("unix:/run/x.sock", false).unwrap(), Listen::Unix("/run/x.sock".into()));
    assert!(ok("unix:$HOME/x", false).unwrap_err().to_string().contains("only $XDG_RUNTIME_DIR"));
    // Two endpoints of an account on one address.
    let raw = RawAccount {
        ssh: Some("h".into()),
        serve: Some(RawServe {
            imap: Some("tcp:127.0.0.1:1143".into()),
            pop3: Some("tcp:127.0.0.1:1143".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(resolve("a", &raw, &Resolving::default()).unwrap_err().to_string().contains("both listen on"));
}

/// Regression: a TOML error showed the offending source line, so a typo
/// `pasword = "…"` or an unterminated password went to stderr (under
/// cron, into mail); and the mode was checked only after a good parse.
#[test]
fn regression_secrets_stay_secret_config_errors_never_show_the_line() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let cases = [
        "[account.a]\nssh = \"h\"\npasword = \"hunter2\"\n",
        "[account.a]\nssh = \"h\"\npassword = \"hunter2\n",
        "[account.a]\nssh = \"h\"\npassword = hunter2\n",
        "[account.a]\nssh = \"h\"\npassword = 123456789\n",
        "[account.a]\nssh = \"h\"\nmax_message_size = \"hunter2\"\n",
    ];
    for case in cases {
        std::fs::write(&path, case).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = load(&path).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Config(_)), "{msg}");
        assert!(!msg.contains("hunter2") && !msg.contains("123456789"), "the secret was shown: {msg}");
        assert!(msg.contains("line 3"), "no line number: {msg}");
    }
    std::fs::write(&path, cases[0]).unwrap();
    let msg = load(&path).unwrap_err().to_string();
    assert!(msg.contains("pasword"), "the key is named: {msg}");
    // Readable by others and not parseable: the exposure is reported.
    for (case, exit) in [(cases[1], crate::error::Exit::Permissions), (cases[0], crate::error::Exit::Usage)] {
        std::fs::write(&path, case).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&path).unwrap_err();
        assert_eq!(e.exit(), exit, "{e}");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}

#[test]
fn secrets_stay_secret_config_password_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[account.a]\nssh = \"h\"\npassword = \"hunter2\"\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = load(&path).unwrap_err();
    assert!(matches!(e, Error::Permissions(_)));
    assert_eq!(e.exit().code(), 6);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let raw = load(&path).unwrap();
    let a = resolve("a", &raw.account["a"], &Resolving::default()).unwrap();
    assert!(!format!("{a:?}").contains("hunter2"));
}

#[test]
fn hooks_resolve_per_folder_and_notify_skips_by_pattern() {
    let raw: RawConfig = toml::from_str(
        "[account.uni]\nssh = \"me@shell\"\nprotocol = \"imap\"\non_new = [\"tell\", \"-a\"]\n\
         on_new_folders = { \"Lists/rust\" = \"tell rust\", \"Junk\" = [] }\non_sent = \"logger sent\"\n\
         notify_skip_folders = [\"Lists/*\", \"Spam\"]\n",
    )
    .unwrap();
    let given = Resolving { notify: true, ..Resolving::default() };
    let a = resolve("uni", &raw.account["uni"], &given).unwrap();
    let h = &a.hooks;
    assert_eq!(h.on_new_in("INBOX"), Some(&Command::Argv(vec!["tell".into(), "-a".into()])));
    assert_eq!(h.on_new_in("Lists/rust"), Some(&Command::Shell("tell rust".into())));
    assert_eq!(h.on_new_in("Junk"), None, "[] is no hook for the folder");
    assert_eq!(h.timeout, Duration::from_secs(30));
    assert!(h.notify, "[daemon] notify is the default");
    assert!(h.notifies("INBOX") && !h.notifies("Spam") && !h.notifies("Lists/rust") && h.notifies("Lists"));
    let bad = RawAccount { ssh: Some("h".into()), on_new: Some(Command::Argv(Vec::new())), ..Default::default() };
    assert!(
        resolve("a", &bad, &Resolving::default()).unwrap_err().to_string().contains("`on_new` is an empty command")
    );
    let bad = RawAccount { ssh: Some("h".into()), hook_timeout: Some(0), ..Default::default() };
    assert!(resolve("a", &bad, &Resolving::default()).is_err());
}
