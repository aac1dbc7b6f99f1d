//! Numbered progress lines (`[2/6] connecting 4 hosts to the switch ... done (0.1 s)`) and the
//! SIGINT/SIGTERM flag the steps check, so an interrupted run still removes what it built.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::LabCtlError;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM set a flag instead of ending the process at once: the running step
/// finishes (every wait in the lab is bounded), the next one sees [`interrupted`] and the
/// guards remove the namespaces and processes on the way out.
pub fn catch_interrupts() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Whether SIGINT or SIGTERM has arrived since [`catch_interrupts`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails with [`LabCtlError::Interrupted`] once a signal has arrived.
pub fn check_interrupted() -> Result<(), LabCtlError> {
    if interrupted() {
        Err(LabCtlError::Interrupted)
    } else {
        Ok(())
    }
}

/// Prints one numbered line per step of a command with a known number of steps.
#[derive(Debug)]
pub struct Progress {
    total: usize,
    done: usize,
}

impl Progress {
    /// A command of `total` steps.
    pub fn new(total: usize) -> Progress {
        Progress { total, done: 0 }
    }

    /// Runs step `what`: prints `[i/N] what ... `, runs `f`, then `done (T s)` or
    /// `failed (T s)`. Refuses to start once interrupted.
    pub fn step<T, E>(&mut self, what: &str, f: impl FnOnce() -> Result<T, E>) -> Result<T, E>
    where
        E: From<LabCtlError>,
    {
        check_interrupted()?;
        self.done += 1;
        print!("[{}/{}] {what} ... ", self.done, self.total);
        let _ = std::io::stdout().flush();
        let start = Instant::now();
        let res = f();
        let secs = start.elapsed().as_secs_f64();
        match &res {
            Ok(_) => println!("done ({secs:.1} s)"),
            Err(_) => println!("failed ({secs:.1} s)"),
        }
        res
    }
}
