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
