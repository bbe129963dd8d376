//! Secrets stay secret: real fetches against Dovecot at the most verbose
//! logging (`-vv` and `SSHMAIL_LOG=trace`) never print the mail password,
//! nor the SASL PLAIN response that carries it in base64.

mod common;

use common::{Env, assert_exit};
use sshmail_testbed::{MAIL_PASSWORD, MAIL_USER, corpus};

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[test]
fn secrets_stay_secret_at_the_highest_log_levels() {
    let mut env = Env::new();
    env.add_messages((0..3).map(|i| corpus::mixed_message(i, 0)));
    let plain = base64(format!("\0{MAIL_USER}\0{MAIL_PASSWORD}").as_bytes());
    let pop3 = format!("127.0.0.1:{}", env.bed.pop3_port);
    let imap = format!("127.0.0.1:{}", env.bed.imap_port);
    let dest = env.bed.ssh_destination();
    let runs: [(&str, Vec<&str>); 4] = [
        ("--pop3", vec!["--server", &pop3, "--auth", "user"]),
        ("--pop3", vec!["--server", &pop3, "--auth", "plain"]),
        ("--imap", vec!["--via", "forward", "--server", &imap, "--auth", "user"]),
        ("--imap", vec!["--via", "forward", "--server", &imap, "--auth", "plain"]),
    ];
    for (i, (protocol, extra)) in runs.iter().enumerate() {
        let maildir = env.home.path().join(format!("Maildir-{i}"));
        let mut cmd = env.fetch_command(protocol, &env.bed.client_key);
        cmd.arg("--ssh").arg(&dest).args(extra).args(env.login_args()).args(["--keep", "-vv"]);
        cmd.arg("--deliver").arg(format!("maildir:{}", maildir.display()));
        cmd.arg("--state-dir").arg(env.home.path().join(format!("state-{i}")));
        cmd.env("SSHMAIL_LOG", "trace");
        let out = cmd.output().unwrap();
        assert_exit(&out, 0);
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(all.contains("C: "), "{protocol} {extra:?}: no protocol trace at all, so this checks nothing:\n{all}");
        assert!(!all.contains(MAIL_PASSWORD), "{protocol} {extra:?} printed the password");
        assert!(!all.contains(&plain), "{protocol} {extra:?} printed the SASL PLAIN response");
        assert_eq!(common::read_dir_contents(&maildir.join("new")).len(), 3);
    }
}
