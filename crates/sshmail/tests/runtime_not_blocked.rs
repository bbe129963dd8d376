//! A batch's record, renames and fsyncs run on a blocking thread: the
//! runtime's other tasks go on meanwhile (a daemon's other accounts, its
//! keepalives). The test runs itself again in a child process with
//! `SSHMAIL_PAUSE` making that step take two seconds, on a runtime with a
//! single worker thread: had the step run on the worker, a ticker task
//! beside the fetch would stop for those two seconds.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Env;
use sshmail::config::{Resolving, resolve};
use sshmail::fetch::{Context, Cycle, fetch_account};
use sshmail_testbed::corpus;

const NAME: &str = "a_batchs_record_and_fsyncs_never_stall_the_runtime";

#[test]
fn a_batchs_record_and_fsyncs_never_stall_the_runtime() {
    if std::env::var_os("SSHMAIL_PAUSE").is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--nocapture"])
            .env("SSHMAIL_PAUSE", "batch-recording:2000")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("pausing 2000 ms at batch-recording"));
        return;
    }
    let mut env = Env::new();
    env.add_messages((0..10).map(|i| corpus::mixed_message(i, 1)));
    let raw = env.imap_account();
    let state = env.state_dir().display().to_string();
    let account = resolve("ticking", &raw, &Resolving { state_dir: Some(&state), ..Resolving::default() }).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let longest_gap = Arc::new(Mutex::new(Duration::ZERO));
    let started = Instant::now();
    runtime.block_on(async {
        let ticker = {
            let longest_gap = longest_gap.clone();
            tokio::spawn(async move {
                let mut last = Instant::now();
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    let gap = last.elapsed();
                    let mut longest = longest_gap.lock().unwrap();
                    *longest = (*longest).max(gap);
                    last = Instant::now();
                }
            })
        };
        let ctx = Context::quiet();
        let outcome = fetch_account(&account, &Cycle::default(), &ctx).await.unwrap();
        assert_eq!(outcome.delivered, 10);
        ticker.abort();
        ctx.pool.close_all().await;
    });
    assert!(started.elapsed() >= Duration::from_secs(2), "the pause did not happen");
    let gap = *longest_gap.lock().unwrap();
    assert!(gap < Duration::from_millis(1000), "the runtime stood still for {gap:?} while a batch was recorded");
    assert_eq!(env.delivered(), env.expected());
}
