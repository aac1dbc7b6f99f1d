//! What a process has cost so far, from `/proc`: CPU seconds (user + system) and peak RSS.

use std::time::Duration;

/// A process's cost at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cost {
    pub cpu: Duration,
    /// `VmHWM`, in KiB.
    pub peak_rss_kib: u64,
}

impl Cost {
    /// Reads `/proc/PID/stat` and `/proc/PID/status`; `None` once the process is gone.
    pub fn of(pid: u32) -> Option<Cost> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Some(Cost {
            cpu: cpu_of(&stat)?,
            peak_rss_kib: hwm_of(&status)?,
        })
    }

    /// Peak RSS in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.peak_rss_kib as f64 / 1024.0
    }
}

/// utime + stime (fields 14 and 15, after the parenthesised command) in seconds.
fn cpu_of(stat: &str) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime 15.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_millis(ticks * 1000 / hz))
}

fn hwm_of(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let c = Cost::of(std::process::id()).expect("own /proc entry");
        assert!(c.peak_rss_kib > 0);
    }

    #[test]
    fn parses_a_stat_line_with_spaces_in_the_name() {
        let stat = "42 (a b) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0";
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        assert_eq!(cpu_of(stat), Some(Duration::from_millis(300 * 1000 / hz)));
        assert_eq!(hwm_of("VmPeak:\t 9 kB\nVmHWM:\t  1234 kB\n"), Some(1234));
    }
}
