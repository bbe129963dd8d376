//! Blocking work (fsync, renames, the ledger's appends) done from async
//! code: on the multi-threaded runtime the worker hands its other tasks
//! over while it blocks, so SSH keepalives and other accounts' transfers go
//! on; elsewhere (a single-threaded test runtime) the work just runs.

/// Runs `f`, which blocks, without stalling the runtime's other tasks.
pub fn run<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs_with_and_without_a_runtime() {
        assert_eq!(super::run(|| 1), 1);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
        // With one worker blocked, another task still runs.
        let (tx, rx) = std::sync::mpsc::channel();
        rt.block_on(async move {
            // On the only worker: spawn a task (it queues behind us), then
            // block until it has run.
            tokio::spawn(async move {
                let other = tokio::spawn(async move { tx.send(()).unwrap() });
                super::run(|| rx.recv_timeout(std::time::Duration::from_secs(5)).expect("the other task ran"));
                other.await.unwrap();
            })
            .await
            .unwrap();
        });
    }
}
