//! POP3 through an in-process SSH forward, against real sshd and Dovecot.

mod common;

use common::{Env, assert_exit, stderr};
use sshmail_testbed::corpus;

#[test]
fn two_hundred_mixed_messages_arrive_exactly_once_and_byte_identical() {
    let mut env = Env::new();
    env.add_messages((0..200).map(|i| corpus::mixed_message(i, 50)));

    // Keep mode: everything arrives, the server keeps its copies.
    let out = env.run(&["--keep"]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered(), env.expected(), "delivered mail differs from the originals");
    assert_eq!(env.bed.server_message_count().unwrap(), 200);
    assert_eq!(env.tmp_files(), 0);

    // A second run fetches nothing.
    let out = env.run(&["--keep"]);
    assert_exit(&out, 1);
    assert_eq!(env.delivered().len(), 200);

    // Delete mode: messages delivered earlier are deleted, not fetched again.
    let out = env.run(&[]);
    assert_exit(&out, 1);
    assert_eq!(env.bed.server_message_count().unwrap(), 0);
    assert_eq!(env.delivered(), env.expected());
}

#[test]
fn delete_mode_empties_the_server_only_after_delivery() {
    let mut env = Env::new();
    env.add_messages((0..40).map(|i| corpus::mixed_message(i, 0)));
    let out = env.run(&["-v"]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered(), env.expected());
    assert_eq!(env.bed.server_message_count().unwrap(), 0, "stderr: {}", stderr(&out));

    // New mail after that is fetched; nothing old comes back.
    env.add_messages((40..45).map(|i| corpus::mixed_message(i, 0)));
    let out = env.run(&[]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered(), env.expected());
    assert_eq!(env.bed.server_message_count().unwrap(), 0);
}

/// Commands written while large bodies stream in: over 64 MB of large
/// messages in delete mode makes a batch commit mid-way, so deletions (POP3
/// DELE; IMAP STORE and UID EXPUNGE) go out while later bodies are still
/// arriving. The deadlock this once caused is pinned down by
/// `wire::tests::regression_reads_never_wait_on_writes`; the 200-message
/// test above is where it first showed.
#[test]
fn large_bodies_with_deletions_written_mid_stream() {
    let mut env = Env::new();
    let big: Vec<Vec<u8>> = (0..40).map(|i| corpus::mixed_message(i, 1)).collect();
    assert!(big.iter().map(Vec::len).sum::<usize>() > 64 << 20, "needs more than one batch");
    env.add_messages(big.clone());
    let out = env.run(&["--timeout", "20"]);
    assert_exit(&out, 0);
    assert_eq!(env.delivered(), env.expected());
    assert_eq!(env.bed.server_message_count().unwrap(), 0);

    // The same over IMAP (STORE and UID EXPUNGE written mid-stream).
    for m in &big {
        env.bed.add_message(m).unwrap();
    }
    let dest = env.bed.ssh_destination();
    let imap_dir = env.home.path().join("imap-Maildir");
    let deliver = format!("maildir:{}", imap_dir.display());
    let out = env.run_imap(&["--ssh", &dest, "--timeout", "20", "--deliver", &deliver]);
    assert_exit(&out, 0);
    assert_eq!(common::read_dir_contents(&imap_dir.join("new")), env.expected());
    assert_eq!(env.bed.server_message_count().unwrap(), 0);
}
