//! IDLE stops cleanly on request: the task's stop token ends the IDLE with
//! DONE, the session with LOGOUT, and the fetch returns its outcome. This is
//! how a daemon will end a watcher for a reload, a poll or a shutdown.

mod common;

use std::time::{Duration, Instant};

use common::Hostile;
use sshmail::config::{Command, RawAccount, Resolving, resolve};
use sshmail::fetch::{Context, Cycle, fetch_account};
use sshmail::stop::Stop;

#[test]
fn idle_stops_cleanly_on_request_with_done_and_logout() {
    let h = Hostile::new("imap");
    let raw = RawAccount {
        protocol: Some("imap".into()),
        via: Some("command".into()),
        tunnel: Some(Command::Shell(h.tunnel())),
        deliver: Some(format!("maildir:{}", h.maildir().display())),
        received: Some(false),
        ..Default::default()
    };
    let state = h.dir.path().join("state").display().to_string();
    let account = resolve("watched", &raw, &Resolving { state_dir: Some(&state), ..Resolving::default() }).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let stop = Stop::new();
        let task = {
            let account = account.clone();
            // The task's token is a child: the owner stops it by stopping
            // the parent.
            let ctx = Context { stop: stop.child(), ..Context::quiet() };
            tokio::spawn(async move {
                let show = Cycle { idle: true, ..Cycle::default() };
                fetch_account(&account, &show, &ctx).await
            })
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !h.log().contains("IDLE") {
            assert!(Instant::now() < deadline, "it never started to IDLE: {}", h.log());
            assert!(!task.is_finished(), "the watch ended by itself: {:?}", task.await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let asked = Instant::now();
        stop.request();
        let outcome = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the watch did not end within 5 s of the request")
            .unwrap()
            .expect("a clean end, not an error");
        assert!(asked.elapsed() < Duration::from_secs(5));
        assert_eq!(outcome.delivered, h.delivered().len());
    });
    let log = h.log();
    let idle = log.rfind("IDLE").unwrap();
    let done = log[idle..].find("DONE").map(|i| idle + i).expect("no DONE after IDLE");
    assert!(log[done..].contains("LOGOUT"), "no LOGOUT after DONE: {log}");
}
