//! A tokio runtime on its own thread inside a network namespace: every socket its tasks open
//! belongs to that namespace, so one process can hold a thousand speakers' addresses without
//! `ip netns exec`.

use std::fs::File;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::thread::JoinHandle;

use anyhow::{Context, bail};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The runtime's thread and a way to run work on it; dropping it stops the runtime (and with
/// it every task, so every socket closes).
pub struct NsRuntime {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl NsRuntime {
    /// Starts a current-thread runtime on a thread that first joins namespace `netns`.
    pub fn start(netns: &str) -> anyhow::Result<NsRuntime> {
        let path = format!("/run/netns/{netns}");
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("sim-{netns}"))
            .spawn(move || {
                // SAFETY: setns(2) on a namespace file we hold open; it changes only this
                // thread's network namespace.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    let e = std::io::Error::last_os_error();
                    let _ = ready_tx.send(Err(anyhow::anyhow!("setns into {path}: {e}")));
                    return;
                }
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(rt.handle().clone()));
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
            })
            .context("starting the runtime thread")?;
        let handle = match ready_rx.recv() {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => return Err(e),
            Err(_) => bail!("the runtime thread ended before starting"),
        };
        Ok(NsRuntime {
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Runs `fut` on the runtime's thread (inside the namespace) and waits for its result.
    pub fn run<T, F>(&self, fut: F) -> anyhow::Result<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.blocking_recv()
            .context("the namespace runtime stopped before answering")
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
