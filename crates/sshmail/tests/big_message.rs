//! Memory does not grow with message size: a 200 MB message is fetched by
//! IMAP (exec) and by POP3 (forward), and delivered into SMTP (aiosmtpd)
//! and LMTP (Dovecot), while the fetching process's peak RSS (VmHWM) is
//! sampled; it must stay under 32 MiB.

mod common;

use std::time::Duration;

use common::{Env, SmtpServer};
use sshmail_testbed::Options;

const SIZE: usize = 200 << 20;
const LIMIT_KIB: u64 = 32 * 1024;

fn big_message() -> Vec<u8> {
    let mut m = b"From: big@example.org\nTo: mailuser@example.net\nSubject: 200 MB\nMIME-Version: 1.0\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n".to_vec();
    let mut rng = sshmail_testbed::corpus::Rng::new(42);
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    while m.len() < SIZE {
        for _ in 0..76 {
            m.push(T[(rng.next_u64() % 64) as usize]);
        }
        m.push(b'\n');
    }
    m
}

/// Runs the command, sampling VmHWM until it exits; returns (exit code, peak KiB, stderr).
fn run_sampled(cmd: std::process::Command) -> (i32, u64, String) {
    let (out, peak) = common::run_sampled(cmd, Duration::from_secs(300));
    (out.status.code().unwrap_or(-1), peak, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn memory_does_not_grow_with_message_size_200_mb_over_imap_and_pop3() {
    let mut env = Env::new();
    let msg = big_message();
    env.bed.add_message(&msg).unwrap();

    let dest = env.bed.ssh_destination();
    let (code, peak, err) = run_sampled(env.imap_command(&["--ssh", &dest, "--keep"]));
    assert_eq!(code, 0, "{err}");
    eprintln!("IMAP: peak RSS {peak} KiB for a {} MiB message", SIZE >> 20);
    assert!(peak > 0, "no RSS sample was taken");
    assert!(peak < LIMIT_KIB, "IMAP peak RSS {peak} KiB is over {LIMIT_KIB} KiB");
    let delivered = env.delivered();
    assert_eq!(delivered.len(), 1);
    assert!(delivered[0] == msg, "the 200 MB message differs");

    let pop3 = env.home.path().join("Maildir-pop3");
    let deliver = format!("maildir:{}", pop3.display());
    let (code, peak, err) = run_sampled(env.command(&["--keep", "--deliver", &deliver]));
    assert_eq!(code, 0, "{err}");
    eprintln!("POP3: peak RSS {peak} KiB for a {} MiB message", SIZE >> 20);
    assert!(peak < LIMIT_KIB, "POP3 peak RSS {peak} KiB is over {LIMIT_KIB} KiB");
    let delivered = common::read_dir_contents(&pop3.join("new"));
    assert!(delivered.len() == 1 && delivered[0] == msg, "the 200 MB message differs (POP3)");
}

/// The SMTP and LMTP sinks streamed DATA into an unbounded write queue: a
/// 200 MB message into `smtp:` peaked at 214 MiB.
#[test]
fn memory_does_not_grow_with_message_size_200_mb_into_smtp_and_lmtp() {
    let mut env = Env::with(Options { lmtp: true, ..Options::default() });
    let msg = big_message();
    env.bed.add_message(&msg).unwrap();
    let dest = env.bed.ssh_destination();

    let smtp = SmtpServer::start(&env.home.path().join("smtp"), None);
    let spec = format!("smtp:127.0.0.1:{}", smtp.port);
    let (code, peak, err) = run_sampled(env.imap_command(&["--ssh", &dest, "--keep", "--deliver", &spec]));
    assert_eq!(code, 0, "{err}");
    eprintln!("SMTP: peak RSS {peak} KiB for a {} MiB message", SIZE >> 20);
    assert!(peak > 0, "no RSS sample was taken");
    assert!(peak < LIMIT_KIB, "SMTP peak RSS {peak} KiB is over {LIMIT_KIB} KiB");
    let got = smtp.received();
    assert!(got.len() == 1 && got[0].1 == msg, "the 200 MB message differs (SMTP)");
    drop(smtp);

    let spec = format!("lmtp:127.0.0.1:{}", env.bed.lmtp_port);
    let (code, peak, err) = run_sampled(env.command(&["--keep", "--deliver", &spec, "--recipient", "mailuser+Big"]));
    assert_eq!(code, 0, "{err}");
    eprintln!("LMTP: peak RSS {peak} KiB for a {} MiB message", SIZE >> 20);
    assert!(peak < LIMIT_KIB, "LMTP peak RSS {peak} KiB is over {LIMIT_KIB} KiB");
    let stored = env.bed.folder_contents("Big").unwrap();
    assert!(stored.len() == 1 && common::strip_trace(&stored[0]) == msg, "the 200 MB message differs (LMTP)");
}
