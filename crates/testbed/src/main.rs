//! `sshmail-testbed`: run the test servers by hand, for benchmarks and demos.
//!
//! ```text
//! sshmail-testbed serve [--messages N] [--kind mixed|small] [--size BYTES] --env-file FILE
//! ```
//!
//! Starts sshd and Dovecot, fills the INBOX, writes shell variable
//! assignments describing them to FILE, and runs until its standard input
//! closes; then it stops both servers (by PID) and removes its directory.
//!
//! ```text
//! sshmail-testbed hostile SCENARIO --state DIR
//! ```
//!
//! Plays a misbehaving POP3 or IMAP server on stdin/stdout (see
//! `sshmail_testbed::hostile`), for sshmail's `--via command`.
//!
//! ```text
//! sshmail-testbed delay --to HOST:PORT --rtt 200ms [--listen ADDR] [--rate 10mbit]
//!                       [--jitter 5ms] [--stall-every 30s --stall-for 2s]
//! ```
//!
//! A delaying TCP proxy (`sshmail_testbed::delay`): prints the port it
//! listens on, then carries connections until it is ended.

#![forbid(unsafe_code)]

use std::io::Read as _;

use anyhow::{Context, Result, bail};
use sshmail_testbed::{MAIL_PASSWORD, MAIL_USER, Testbed, corpus};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("hostile") {
        let (Some(scenario), Some("--state"), Some(state)) =
            (args.get(1), args.get(2).map(String::as_str), args.get(3))
        else {
            bail!("usage: sshmail-testbed hostile SCENARIO --state DIR");
        };
        return sshmail_testbed::hostile::serve(scenario, std::path::Path::new(state));
    }
    if args.first().map(String::as_str) == Some("delay") {
        return delay(&args[1..]);
    }
    if args.first().map(String::as_str) != Some("serve") {
        bail!("usage: sshmail-testbed serve [--messages N] [--kind mixed|small] [--size BYTES] --env-file FILE");
    }
    let mut messages = 100usize;
    let mut kind = "mixed".to_string();
    let mut size = 4096usize;
    let mut env_file = None;
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--messages" => messages = value()?.parse()?,
            "--kind" => kind = value()?,
            "--size" => size = value()?.parse()?,
            "--env-file" => env_file = Some(value()?),
            other => bail!("unknown option {other}"),
        }
    }
    let env_file = env_file.context("--env-file is required")?;
    let mut bed = Testbed::start()?;
    for i in 0..messages {
        let m = match kind.as_str() {
            "mixed" => corpus::mixed_message(i, 50),
            "small" => corpus::small_message(i, size),
            other => bail!("unknown --kind {other}"),
        };
        bed.add_message(&m)?;
    }
    let vars = [
        ("TESTBED_DIR", bed.path().display().to_string()),
        ("SSH_PORT", bed.ssh_port.to_string()),
        ("SSH_USER", bed.account.name.clone()),
        ("POP3_PORT", bed.pop3_port.to_string()),
        ("IMAP_PORT", bed.imap_port.to_string()),
        ("CLIENT_KEY", bed.client_key.display().to_string()),
        ("KNOWN_HOSTS", bed.known_hosts.display().to_string()),
        ("MAIL_USER", MAIL_USER.to_string()),
        ("MAIL_PASSWORD", MAIL_PASSWORD.to_string()),
        ("SERVER_MAILDIR", bed.server_maildir().display().to_string()),
        ("DOVECOT_CONFIG", bed.dovecot_config.display().to_string()),
        ("MESSAGES", messages.to_string()),
    ];
    let text: String = vars.iter().map(|(k, v)| format!("{k}='{v}'\n")).collect();
    let tmp = format!("{env_file}.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &env_file)?;
    // Serve until whoever started us closes our stdin.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(bed);
    Ok(())
}

/// `sshmail-testbed delay …`.
fn delay(args: &[String]) -> Result<()> {
    use sshmail_testbed::delay;
    let mut listen = "127.0.0.1:0".to_string();
    let mut to = None;
    let mut profile = delay::Profile {
        rtt: std::time::Duration::ZERO,
        rate: None,
        jitter: std::time::Duration::ZERO,
        stall_every: None,
        stall_for: std::time::Duration::ZERO,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--listen" => listen = value()?,
            "--to" => to = Some(value()?),
            "--rtt" => profile.rtt = delay::duration(&value()?)?,
            "--rate" => profile.rate = Some(delay::rate(&value()?)?),
            "--jitter" => profile.jitter = delay::duration(&value()?)?,
            "--stall-every" => profile.stall_every = Some(delay::duration(&value()?)?),
            "--stall-for" => profile.stall_for = delay::duration(&value()?)?,
            other => bail!("unknown option {other}"),
        }
    }
    let to = to.context("--to HOST:PORT is required")?;
    delay::serve(&listen, &to, profile)
}
