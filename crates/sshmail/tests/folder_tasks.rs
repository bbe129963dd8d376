//! An account's folders fetched by concurrent tasks in one process (as the
//! daemon runs them) share the account's one open ledger: neither task is
//! refused by the ledger's lock, every message arrives exactly once, and a
//! later cycle of the whole account finds nothing new.

mod common;

use common::Env;
use sshmail::config::{RawAccount, Resolving, resolve};
use sshmail::fetch::{Context, Cycle, fetch_account, mailbox_identity};
use sshmail_testbed::corpus;

#[test]
fn one_ledger_per_account_is_shared_by_its_concurrent_folder_tasks() {
    let mut env = Env::new();
    env.add_messages((0..6).map(|i| corpus::mixed_message(i, 1)));
    for i in 6..10 {
        let m = corpus::mixed_message(i, 1);
        env.bed.add_message_to("lists.rust", &m).unwrap();
        env.originals.push(m);
    }
    let raw = RawAccount { folders: Some(vec!["INBOX".into(), "lists.*".into()]), ..env.imap_account() };
    let state = env.state_dir();
    let account =
        resolve("tasks", &raw, &Resolving { state_dir: Some(&state.display().to_string()), ..Resolving::default() })
            .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let ctx = Context::quiet();
    runtime.block_on(async {
        // Held open here for the whole test: a task that opened the ledger
        // file on its own would find it locked.
        let held =
            ctx.ledgers.open_for_mailbox(&state, "tasks", &mailbox_identity(&account), None, &ctx.stop).await.unwrap();
        let task = |folder: &str| {
            let (account, ctx) = (account.clone(), ctx.clone());
            let cycle = Cycle { folders: Some(vec![folder.to_string()]), ..Cycle::default() };
            tokio::spawn(async move { fetch_account(&account, &cycle, &ctx).await })
        };
        let (inbox, lists) = (task("INBOX"), task("lists.rust"));
        let inbox = inbox.await.unwrap().expect("the INBOX task");
        let lists = lists.await.unwrap().expect("the lists.rust task");
        assert_eq!((inbox.delivered, lists.delivered), (6, 4));
        drop(held);

        // The whole account afterwards: nothing new, nothing twice.
        let again = fetch_account(&account, &Cycle::default(), &ctx).await.unwrap();
        assert_eq!(again.delivered, 0, "a later cycle fetched again what the tasks delivered");
        ctx.pool.close_all().await;
    });
    assert_eq!(env.delivered(), env.expected(), "every message exactly once");
    assert_eq!(env.bed.server_message_count().unwrap(), 0);
    assert_eq!(env.bed.folder_message_count("lists.rust").unwrap(), 0);
}
