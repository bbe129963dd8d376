//! The TOML config over any text, parsed and resolved: never a panic, and a
//! parse error never shows a password that is in the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

const SECRET: &str = "Zq9SECRETq9Z";

fuzz_target!(|data: &[u8]| {
    let Some((&at, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    // The fuzzer's text with a password line put in at some line.
    let mut lines: Vec<&str> = text.lines().collect();
    let secret_line = format!("password = \"{SECRET}\"");
    let at = usize::from(at).min(lines.len());
    lines.insert(at, &secret_line);
    let text = lines.join("\n");
    match sshmail::config::parse(&text, std::path::Path::new("fuzz.toml")) {
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains(SECRET), "a parse error showed the password: {msg}");
        }
        Ok(raw) => {
            let given = sshmail::config::Resolving { state_dir: raw.state_dir.as_deref(), ..Default::default() };
            for (name, account) in &raw.account {
                if let Err(e) = sshmail::config::resolve(name, account, &given) {
                    assert!(!e.to_string().contains(SECRET), "a config error showed the password: {e}");
                }
            }
        }
    }
});
