//! A fetch task cancelled mid-message (as a daemon cancels one for a
//! reload or a shutdown) leaves no staging file behind, and the next fetch
//! delivers everything exactly once.

mod common;

use std::time::{Duration, Instant};

use common::Env;
use sshmail::config::{Resolving, resolve};
use sshmail::fetch::{Context, Cycle, fetch_account};
use sshmail_testbed::corpus;

#[test]
fn durable_before_destructive_a_fetch_cancelled_mid_message_leaves_no_staging_file() {
    let mut env = Env::new();
    env.add_messages((0..30).map(|i| corpus::mixed_message(i, 1)));
    let raw = env.imap_account();
    let state = env.state_dir().display().to_string();
    let account = resolve("cancelled", &raw, &Resolving { state_dir: Some(&state), ..Resolving::default() }).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let ctx = Context::quiet();
    runtime.block_on(async {
        let task = {
            let (account, ctx) = (account.clone(), ctx.clone());
            tokio::spawn(async move { fetch_account(&account, &Cycle::default(), &ctx).await })
        };
        // Cancel while a message is being written into tmp/.
        let deadline = Instant::now() + Duration::from_secs(60);
        while env.tmp_files() == 0 {
            assert!(Instant::now() < deadline, "the fetch never started writing a message");
            assert!(!task.is_finished(), "the fetch ended before it could be cancelled");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        assert_eq!(env.tmp_files(), 0, "the cancelled task left staging files");
        let partial = env.delivered().len();
        assert!(partial < 30, "everything was delivered before the cancel");

        // The next cycle, in the same process and pool, finishes the job.
        let outcome = fetch_account(&account, &Cycle::default(), &ctx).await.unwrap();
        assert_eq!(outcome.delivered + partial, 30);
        ctx.pool.close_all().await;
    });
    assert_eq!(env.delivered(), env.expected(), "every message exactly once");
    assert_eq!(env.tmp_files(), 0);
    assert_eq!(env.bed.server_message_count().unwrap(), 0);
}
