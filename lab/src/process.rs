//! Processes started inside a namespace, with their output in log files, stopped on drop; and
//! [`wait_for`], the polling helper every test waits with.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::netns::Netns;
use crate::{LabError, Result};

/// How often [`wait_for`] polls.
const POLL: Duration = Duration::from_millis(200);
/// How many lines of each log a failure message shows.
const TAIL_LINES: usize = 30;
/// Multiplies every daemon's start timeout (a whole number, default 1): set where everything
/// runs many times slower than on the machine, as in the TCG VM of tests/vm/.
pub const SLOWDOWN_ENV: &str = "MARGAY_LAB_SLOWDOWN";

/// A daemon's start timeout: `base` times [`SLOWDOWN_ENV`].
pub fn start_timeout(base: Duration) -> Duration {
    let factor = std::env::var(SLOWDOWN_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    base * factor
}

/// A process running inside a namespace. Dropping it stops it (SIGTERM, then SIGKILL).
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Option<Child>,
    pid: u32,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Process {
    /// Starts `program ARGS...` in `ns`; its stdout and stderr go to `LOGDIR/NAME.stdout` and
    /// `LOGDIR/NAME.stderr`.
    pub fn spawn<I, S>(
        ns: &Netns,
        name: &str,
        program: impl AsRef<OsStr>,
        args: I,
        log_dir: &Path,
    ) -> Result<Process>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let stdout = log_dir.join(format!("{name}.stdout"));
        let stderr = log_dir.join(format!("{name}.stderr"));
        let out = File::create(&stdout).map_err(LabError::io(format!("creating {stdout:?}")))?;
        let err = File::create(&stderr).map_err(LabError::io(format!("creating {stderr:?}")))?;
        let mut cmd = ns.command(program);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .map_err(LabError::io(format!("starting {name}: {cmd:?}")))?;
        let pid = child.id();
        tracing::debug!(name, pid, netns = ns.name(), "started");
        Ok(Process {
            name: name.to_string(),
            child: Some(child),
            pid,
            stdout,
            stderr,
        })
    }

    /// The process's name in this test (also its log files' stem).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its PID (`ip netns exec` execs the program, so this is the program's own PID).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether it is still running; reaps it if it has exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits up to `timeout` for it to exit (after a signal the caller sent); its exit status
    /// as [`Process::exit_status`] gives it, or a timeout error naming `what` with its logs.
    pub fn wait_exit(&mut self, what: &str, timeout: Duration) -> Result<String> {
        let res = wait_for(what, timeout, &[], || {
            self.exit_status()
                .ok_or_else(|| "still running".to_string())
        });
        res.map_err(|e| self.with_logs(e))
    }

    /// `e` with this process's logs in place of a timeout's (other errors unchanged).
    fn with_logs(&self, e: LabError) -> LabError {
        match e {
            LabError::Timeout {
                what, waited, last, ..
            } => LabError::Timeout {
                what,
                waited,
                last,
                logs: self.log_tails(),
            },
            e => e,
        }
    }

    /// Its exit status when it has exited, as text ("exit status: 1", "signal: 9").
    pub fn exit_status(&mut self) -> Option<String> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
            .map(|s| s.to_string())
    }

    /// Stops it: SIGTERM, up to 3 s grace, then SIGKILL; waits for it. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            // SAFETY: kill(2) on the PID of our own child, which we have not reaped yet. A
            // paused process needs SIGCONT to act on SIGTERM.
            unsafe {
                libc::kill(self.pid as i32, libc::SIGTERM);
                libc::kill(self.pid as i32, libc::SIGCONT);
            };
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
        }
        let _ = child.wait();
        tracing::debug!(name = self.name, pid = self.pid, "stopped");
    }

    /// Freezes it (SIGSTOP): its sockets stay open but nothing answers, as a hung daemon.
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&mut self, signal: i32) {
        if self.is_running() {
            // SAFETY: kill(2) on the PID of our own child, which we have not reaped yet.
            unsafe { libc::kill(self.pid as i32, signal) };
        }
    }

    /// Kills it with SIGKILL (no chance to clean up, as a crash) and reaps it. Idempotent.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = child.kill();
        let _ = child.wait();
        tracing::debug!(name = self.name, pid = self.pid, "killed");
    }

    /// The last `lines` lines of its stdout and stderr, labelled.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut s = String::new();
        for (kind, path) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            s.push_str(&format!(
                "--- {} {kind} ({}), last {} lines ---\n",
                self.name,
                path.display(),
                all.len() - start
            ));
            for l in &all[start..] {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }

    /// Lets the process outlive this guard: dropping the guard no longer stops it, and nothing
    /// here waits for it (when we exit, init reaps it). Returns its PID, the handle left to
    /// stop it with. For a lab kept running after its command ends (`margay-lab up --keep`).
    pub fn into_kept(mut self) -> u32 {
        // Without a child, `stop` (and so `drop`) has nothing to do.
        self.child = None;
        tracing::debug!(name = self.name, pid = self.pid, "kept running");
        self.pid
    }

    /// Paths of its stdout and stderr logs.
    pub fn log_paths(&self) -> (&Path, &Path) {
        (&self.stdout, &self.stderr)
    }

    /// For a running `ping`: interrupts it (SIGINT, as ^C does) and returns its summary line
    /// (`N packets transmitted, M received, X% packet loss, ...`) once it has printed it.
    pub fn ping_summary(&self, timeout: Duration) -> Result<String> {
        if self.child.is_some() {
            // SAFETY: kill(2) on the PID of our own child, which we have not reaped yet.
            unsafe { libc::kill(self.pid as i32, libc::SIGINT) };
        }
        wait_for(&format!("{}'s summary", self.name), timeout, &[], || {
            let text = std::fs::read_to_string(&self.stdout).map_err(|e| e.to_string())?;
            text.lines()
                .find(|l| l.contains("packet loss"))
                .map(str::to_string)
                .ok_or(text)
        })
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Anything whose logs belong in a failure message.
pub trait HasLogs {
    /// The tails of its logs.
    fn log_tails(&self) -> String;
}

impl Process {
    /// What waiting for this process to start came to: if it exited first (`exited`), an
    /// error naming `command`, its exit status (`when`: "before it was ready", ...) and its
    /// stderr; otherwise `waited`, with the process's logs added to a timeout.
    pub fn start_outcome(
        &self,
        waited: Result<()>,
        exited: Option<String>,
        command: impl Into<String>,
        when: &str,
    ) -> Result<()> {
        if let Some(status) = exited {
            return Err(LabError::Command {
                command: command.into(),
                status: if when.is_empty() {
                    status
                } else {
                    format!("{status} {when}")
                },
                stderr: self.log_tail(30),
            });
        }
        waited.map_err(|e| self.with_logs(e))
    }
}

impl HasLogs for Process {
    fn log_tails(&self) -> String {
        self.log_tail(TAIL_LINES)
    }
}

/// Polls `condition` every 200 ms until it returns `Ok`, or fails after `timeout`.
///
/// `condition` returns `Err(observation)` while not yet true; the last observation and the
/// tails of `logs` go into the timeout error, so a failure says what was seen instead.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    logs: &[&dyn HasLogs],
    condition: impl FnMut() -> Result<T, String>,
) -> Result<T> {
    wait_for_every(what, timeout, POLL, logs, condition)
}

/// As [`wait_for`], polling every `poll`: for waits whose length is measured.
pub fn wait_for_every<T>(
    what: &str,
    timeout: Duration,
    poll: Duration,
    logs: &[&dyn HasLogs],
    mut condition: impl FnMut() -> Result<T, String>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        match condition() {
            Ok(v) => return Ok(v),
            Err(last) if start.elapsed() >= timeout => {
                let logs = logs.iter().map(|l| l.log_tails()).collect::<String>();
                return Err(LabError::Timeout {
                    what: what.to_string(),
                    waited: start.elapsed(),
                    last,
                    logs,
                });
            }
            Err(_) => std::thread::sleep(poll),
        }
    }
}

/// Waits until `best` finds a route that passes `check` (which says what is wrong); for any
/// daemon's driver: `best` reads its best path for one prefix.
pub fn wait_for_route<R: Clone + std::fmt::Debug>(
    what: &str,
    timeout: Duration,
    logs: &[&dyn HasLogs],
    mut best: impl FnMut() -> Result<Option<R>>,
    mut check: impl FnMut(&R) -> std::result::Result<(), String>,
) -> Result<R> {
    wait_for(what, timeout, logs, || match best() {
        Ok(Some(r)) => check(&r)
            .map(|_| r.clone())
            .map_err(|e| format!("{e}: {r:?}")),
        Ok(None) => Err("no route".into()),
        Err(e) => Err(e.to_string()),
    })
}

/// Waits until `routes` finds none (`None`) for the prefix it reads.
pub fn wait_for_no_route<R: std::fmt::Debug>(
    what: &str,
    timeout: Duration,
    logs: &[&dyn HasLogs],
    mut routes: impl FnMut() -> Result<Option<R>>,
) -> Result<()> {
    wait_for(what, timeout, logs, || match routes() {
        Ok(None) => Ok(()),
        Ok(Some(r)) => Err(format!("still has {r:?}")),
        Err(e) => Err(e.to_string()),
    })
}

/// Checks that `condition` holds (returns `Ok`) at every poll for the whole of `period`;
/// fails at the first poll where it does not, with the logs.
pub fn holds_for(
    what: &str,
    period: Duration,
    logs: &[&dyn HasLogs],
    mut condition: impl FnMut() -> Result<(), String>,
) -> Result<()> {
    let start = Instant::now();
    loop {
        if let Err(seen) = condition() {
            let logs = logs.iter().map(|l| l.log_tails()).collect::<String>();
            return Err(LabError::Violated {
                what: what.to_string(),
                after: start.elapsed(),
                seen,
                logs,
            });
        }
        if start.elapsed() >= period {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

/// Reads `out` line by line on a thread of its own and hands each line over with the moment it
/// arrived (for monitors such as `ip monitor` or `nft monitor`, whose events are timed by
/// their arrival). The thread ends at end of file or when the receiver is dropped.
pub fn stamped_lines<R: Read + Send + 'static>(out: R) -> mpsc::Receiver<(Instant, String)> {
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    lines
}
