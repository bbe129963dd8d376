//! An ssh_config of any text, as sshmail reads it, then applied to an
//! account: never a panic (an error is fine).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut reader = std::io::BufReader::new(text.as_bytes());
    let Ok(config) = ssh2_config::SshConfig::default().parse(&mut reader, ssh2_config::ParseRule::ALLOW_UNKNOWN_FIELDS)
    else {
        return;
    };
    let raw: sshmail::config::RawConfig =
        match sshmail::config::parse("[account.a]\nssh = \"me@mailhost\"\n", std::path::Path::new("fuzz.toml")) {
            Ok(r) => r,
            Err(e) => panic!("the fixed account does not parse: {e}"),
        };
    let given = sshmail::config::Resolving { ssh_config: Some(&config), ..Default::default() };
    let _ = sshmail::config::resolve("a", &raw.account["a"], &given);
});
