//! The scripted servers answer as their scenario says. (Building this test
//! also builds the `sshmail-testbed` binary that sshmail's own tests run.)

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};

fn session(scenario: &str, commands: &[&str]) -> Vec<String> {
    let state = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sshmail-testbed"))
        .args(["hostile", scenario, "--state"])
        .arg(state.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for c in commands {
        stdin.write_all(format!("{c}\r\n").as_bytes()).unwrap();
    }
    drop(stdin);
    let lines: Vec<String> = BufReader::new(child.stdout.take().unwrap()).lines().map(|l| l.unwrap()).collect();
    assert!(child.wait().unwrap().success());
    let log = std::fs::read_to_string(state.path().join("log")).unwrap();
    assert_eq!(log.lines().count(), commands.len(), "every command is logged: {log}");
    lines
}

#[test]
fn pop3_scripts_answer_and_log() {
    let lines = session("pop3", &["CAPA", "UIDL", "QUIT"]);
    assert!(lines[0].starts_with("+OK"));
    assert!(lines.contains(&"PIPELINING".to_string()));
    assert!(lines.contains(&"3 uid-3".to_string()), "{lines:?}");
    let lines = session("pop3-dele-refused", &["DELE 1", "QUIT"]);
    assert!(lines[1].starts_with("-ERR"), "{lines:?}");
}

#[test]
fn imap_scripts_answer_and_log() {
    let lines = session("imap-hostile-folders", &["a LIST \"\" \"*\"", "b LOGOUT"]);
    assert!(lines[0].starts_with("* PREAUTH"));
    assert!(lines.iter().any(|l| l == "* LIST () \"/\" \"..\""), "{lines:?}");
    assert!(lines.last().unwrap().starts_with("b OK"));
}
