//! The ping matrix: every pod to every other pod, and the ToR to every pod, with iputils'
//! `ping` run inside the source's namespace. All pings of a matrix run at once (one process
//! each), so a matrix takes about as long as one ping.

use std::fmt::Write;
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};

use super::state::LabState;

/// One ping run: from a namespace to an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingResult {
    /// The source's name (a pod's, or `tor`).
    pub from: String,
    /// The destination pod's name.
    pub to: String,
    pub dst: IpAddr,
    pub sent: u32,
    pub received: u32,
    /// What went wrong when ping did not even run or report.
    pub error: Option<String>,
}

impl PingResult {
    /// At least one reply came back.
    pub fn reached(&self) -> bool {
        self.received > 0
    }

    /// Lost packets in percent.
    pub fn loss_percent(&self) -> u32 {
        (self.received * 100)
            .checked_div(self.sent)
            .map_or(100, |reached| 100 - reached)
    }
}

/// Reads `N packets transmitted, M received` from ping's summary.
pub fn parse_summary(text: &str) -> Option<(u32, u32)> {
    let line = text.lines().find(|l| l.contains("packets transmitted"))?;
    let mut parts = line.split(',');
    let sent = parts.next()?.split_whitespace().next()?.parse().ok()?;
    let received = parts.next()?.split_whitespace().next()?.parse().ok()?;
    Some((sent, received))
}

/// Starts `ping -c COUNT` to `dst` in namespace `netns` (0.2 s apart, 1 s to wait for each).
fn spawn(netns: &str, dst: IpAddr, count: u32) -> std::io::Result<Child> {
    spawn_every(netns, dst, count, "0.2")
}

/// Starts `ping -c COUNT -i INTERVAL` to `dst` in namespace `netns` (1 s to wait for each).
fn spawn_every(netns: &str, dst: IpAddr, count: u32, interval: &str) -> std::io::Result<Child> {
    Command::new("ip")
        .args([
            "netns", "exec", netns, "ping", "-n", "-q", "-i", interval, "-W", "1",
        ])
        .args(["-c", &count.to_string(), &dst.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

/// Runs every ping of `pairs` (source name, source namespace, destination name, address)
/// concurrently and returns their results in the same order.
pub fn run(pairs: &[(String, String, String, IpAddr)], count: u32) -> Vec<PingResult> {
    let children: Vec<_> = pairs
        .iter()
        .map(|(_, netns, _, dst)| spawn(netns, *dst, count))
        .collect();
    collect(pairs, children, count)
}

/// Pings running in the background, one process per pair: a steady stream whose lost replies
/// [`Stream::finish`] counts.
#[derive(Debug)]
pub struct Stream {
    pairs: Vec<(String, String, String, IpAddr)>,
    children: Vec<std::io::Result<Child>>,
    count: u32,
}

impl Stream {
    /// Starts `count` pings `interval_ms` apart for every pair of `pairs`.
    pub fn start(
        pairs: Vec<(String, String, String, IpAddr)>,
        count: u32,
        interval_ms: u32,
    ) -> Stream {
        let interval = format!("{}.{:03}", interval_ms / 1000, interval_ms % 1000);
        let children = pairs
            .iter()
            .map(|(_, netns, _, dst)| spawn_every(netns, *dst, count, &interval))
            .collect();
        Stream {
            pairs,
            children,
            count,
        }
    }

    /// Waits for every ping to send its last packet and wait for its reply; their results in
    /// the order of the pairs.
    pub fn finish(mut self) -> Vec<PingResult> {
        let children = std::mem::take(&mut self.children);
        collect(&self.pairs, children, self.count)
    }
}

impl Drop for Stream {
    /// A stream given up on (a failed step) stops its pings.
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits for the pings of `pairs` and reads their summaries.
fn collect(
    pairs: &[(String, String, String, IpAddr)],
    children: Vec<std::io::Result<Child>>,
    count: u32,
) -> Vec<PingResult> {
    pairs
        .iter()
        .zip(children)
        .map(|((from, _, to, dst), child)| {
            let mut r = PingResult {
                from: from.clone(),
                to: to.clone(),
                dst: *dst,
                sent: count,
                received: 0,
                error: None,
            };
            match child.and_then(|c| c.wait_with_output()) {
                Ok(out) => {
                    let text = String::from_utf8_lossy(&out.stdout);
                    match parse_summary(&text) {
                        Some((s, rcv)) => (r.sent, r.received) = (s, rcv),
                        None => {
                            r.error = Some(String::from_utf8_lossy(&out.stderr).trim().to_string())
                        }
                    }
                }
                Err(e) => r.error = Some(e.to_string()),
            }
            r
        })
        .collect()
}

/// Every (source, destination) pair of the lab: pod to every other pod, then the ToR to every
/// pod, once per address of the destination (both families on a dual-stack lab).
pub fn pairs(state: &LabState) -> Vec<(String, String, String, IpAddr)> {
    let mut v = Vec::new();
    for from in &state.pods {
        for to in state.pods.iter().filter(|t| t.name != from.name) {
            for ip in to.addresses() {
                v.push((from.name.clone(), from.netns.clone(), to.name.clone(), ip));
            }
        }
    }
    // Without BGP the ToR has no route to the pods (as outside Calico's vxlan backend).
    for to in state.pods.iter().filter(|_| !state.no_bgp) {
        for ip in to.addresses() {
            v.push((
                state.tor.name.clone(),
                state.tor.netns.clone(),
                to.name.clone(),
                ip,
            ));
        }
    }
    v
}

/// The matrix of the whole lab.
pub fn matrix(state: &LabState, count: u32) -> Vec<PingResult> {
    run(&pairs(state), count)
}

/// The matrix as a table per address family present: a row per source (pods, then the ToR),
/// a column per destination pod; `ok` when every packet came back, `N%` loss when some did,
/// `FAIL` when none did, `-` on the diagonal. One family renders as before, without a title.
pub fn render(state: &LabState, results: &[PingResult]) -> String {
    let v4: Vec<PingResult> = results
        .iter()
        .filter(|r| r.dst.is_ipv4())
        .cloned()
        .collect();
    let v6: Vec<PingResult> = results
        .iter()
        .filter(|r| r.dst.is_ipv6())
        .cloned()
        .collect();
    match (v4.is_empty(), v6.is_empty()) {
        (false, false) => format!(
            "IPv4\n{}IPv6\n{}",
            render_family(state, &v4),
            render_family(state, &v6)
        ),
        (true, false) => render_family(state, &v6),
        _ => render_family(state, &v4),
    }
}

/// One family's table.
fn render_family(state: &LabState, results: &[PingResult]) -> String {
    let sources: Vec<&str> = state
        .pods
        .iter()
        .map(|p| p.name.as_str())
        .chain(
            [state.tor.name.as_str()]
                .into_iter()
                .filter(|_| !state.no_bgp),
        )
        .collect();
    let width = state
        .pods
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(4)
        .max(5);
    let mut out = String::new();
    let _ = write!(out, "{:width$}", "from \\ to");
    for p in &state.pods {
        let _ = write!(out, " {:>width$}", p.name);
    }
    out.push('\n');
    for src in sources {
        let _ = write!(out, "{src:width$}");
        for p in &state.pods {
            let cell = match results.iter().find(|r| r.from == src && r.to == p.name) {
                None => "-".to_string(),
                Some(r) if r.received == r.sent && r.sent > 0 => "ok".to_string(),
                Some(r) if r.reached() => format!("{}%", r.loss_percent()),
                Some(_) => "FAIL".to_string(),
            };
            let _ = write!(out, " {cell:>width$}");
        }
        out.push('\n');
    }
    let ok = results.iter().filter(|r| r.reached()).count();
    let _ = writeln!(
        out,
        "{ok} of {} reached (pod to pod across and within nodes{})",
        results.len(),
        if state.no_bgp {
            "; no BGP: the ToR has no route to the pods"
        } else {
            ", ToR to every pod"
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line_gives_sent_and_received() {
        let text = "PING 10.100.1.1 (10.100.1.1) 56(84) bytes of data.\n\n--- 10.100.1.1 ping \
                    statistics ---\n3 packets transmitted, 2 received, 33.3333% packet loss, \
                    time 402ms\n";
        assert_eq!(parse_summary(text), Some((3, 2)));
        assert_eq!(
            parse_summary("1 packets transmitted, 0 received, +1 errors, 100% packet loss"),
            Some((1, 0))
        );
        assert_eq!(parse_summary("ping: connect: Network is unreachable"), None);
    }

    #[test]
    fn loss_is_counted_from_replies() {
        let r = PingResult {
            from: "a".into(),
            to: "b".into(),
            dst: IpAddr::from([127, 0, 0, 1]),
            sent: 3,
            received: 2,
            error: None,
        };
        assert!(r.reached());
        assert_eq!(r.loss_percent(), 34);
    }
}
