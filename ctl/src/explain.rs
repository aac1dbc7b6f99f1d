//! `margayctl policy explain --from POD --to POD|IP --port 80/tcp [-o json]`: the verdict for
//! a flow and the tier, policy and rule that decided each end, computed by the same model
//! felix enforces (`margay_datastore::policy`).

use anyhow::{Context, bail};
use margay_datastore::Store;
use margay_datastore::policy::{
    DecidedBy, Decision, Endpoint, Flow, FlowEnd, PolicyModel, Step, Verdict, load,
};
use margay_datastore::resources::{PolicyType, Protocol};
use serde::Serialize;
use std::fmt::Write as _;
use std::net::IpAddr;

/// Arguments of `policy explain`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExplainArgs {
    /// The source: a pod (`name` in -n's namespace, or `namespace/name`), or an address.
    #[arg(long)]
    pub from: String,
    /// The destination: a pod or an address.
    #[arg(long)]
    pub to: String,
    /// `80/tcp`, `53/udp`, `9/sctp`, `icmp`, `icmp/8` (type), `icmp/3/1` (type and code);
    /// a bare number is TCP.
    #[arg(long)]
    pub port: String,
    /// Namespace of pods named without one.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// text or json.
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: ExplainOutput,
    /// Exit with status 1 when the flow is denied (for scripts).
    #[arg(long)]
    pub exit_code: bool,
}

/// Output format of `policy explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExplainOutput {
    Text,
    Json,
}

/// A flow's protocol part, read from `--port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PortSpec {
    pub protocol: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp: Option<(u8, u8)>,
}

/// Reads `80/tcp`, `53/udp`, `80`, `icmp`, `icmp/8`, `icmpv6/128/0`.
pub fn parse_port(s: &str) -> anyhow::Result<PortSpec> {
    let parts: Vec<&str> = s.split('/').collect();
    let proto_of = |name: &str| {
        Protocol::Name(name.to_string())
            .number()
            .with_context(|| format!("'{name}' is not a protocol"))
    };
    if let Ok(port) = parts[0].parse::<u16>() {
        let protocol = match parts.get(1) {
            Some(p) => proto_of(p)?,
            None => 6,
        };
        if parts.len() > 2 || !Protocol::Number(u16::from(protocol)).has_ports() {
            bail!("'{s}': give PORT/tcp, PORT/udp, PORT/sctp or PORT/udplite");
        }
        return Ok(PortSpec {
            protocol,
            port: Some(port),
            icmp: None,
        });
    }
    let protocol = proto_of(parts[0])?;
    let num = |i: usize| -> anyhow::Result<Option<u8>> {
        parts
            .get(i)
            .map(|p| p.parse::<u8>().with_context(|| format!("'{p}' in '{s}'")))
            .transpose()
    };
    if Protocol::Number(u16::from(protocol)).is_icmp() {
        // An ICMP flow always has a type; echo request (8, or 128 for ICMPv6) when not given.
        let echo = if protocol == 1 { 8 } else { 128 };
        return Ok(PortSpec {
            protocol,
            port: None,
            icmp: Some((num(1)?.unwrap_or(echo), num(2)?.unwrap_or(0))),
        });
    }
    if parts.len() > 1 {
        bail!("'{s}': a port goes first (80/tcp)");
    }
    Ok(PortSpec {
        protocol,
        port: None,
        icmp: None,
    })
}

/// Finds an endpoint by `namespace/name` or `name` (endpoint or pod name).
fn find<'m>(m: &'m PolicyModel, r: &str, default_ns: &str) -> Option<&'m Endpoint> {
    let (ns, name) = r.split_once('/').unwrap_or((default_ns, r));
    m.endpoints
        .iter()
        .find(|e| e.namespace == ns && e.name == name)
        .or_else(|| {
            m.endpoints
                .iter()
                .find(|e| e.namespace == ns && e.workload == name)
        })
}

/// Resolves `--from`/`--to`: an address (an endpoint's, a node's or outside), or a pod.
pub fn resolve<'m>(m: &'m PolicyModel, r: &str, default_ns: &str) -> anyhow::Result<FlowEnd<'m>> {
    if let Ok(ip) = r.parse::<IpAddr>() {
        return Ok(m.resolve(ip));
    }
    let ep = find(m, r, default_ns).with_context(|| {
        let (ns, name) = r.split_once('/').unwrap_or((default_ns, r));
        format!("no workload endpoint or pod '{name}' in namespace '{ns}'")
    })?;
    let ip = *ep
        .addresses
        .first()
        .with_context(|| format!("{} has no address", ep.key))?;
    Ok(FlowEnd {
        ip,
        endpoint: Some(ep),
        host_of: None,
    })
}

/// The whole answer, as `-o json` prints it.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub from: End,
    pub to: End,
    pub flow: PortSpec,
    pub verdict: Verdict,
}

/// One end of the flow, named.
#[derive(Debug, Serialize)]
pub struct End {
    pub ip: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_of: Option<String>,
    /// The policies that select this endpoint, in evaluation order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
}

fn end(m: &PolicyModel, e: &FlowEnd<'_>) -> End {
    End {
        ip: e.ip,
        endpoint: e.endpoint.map(|ep| ep.key.clone()),
        host_of: e.host_of.map(str::to_string),
        policies: e
            .endpoint
            .map(|ep| {
                m.policies_selecting(ep)
                    .iter()
                    .map(|p| format!("{}:{}", p.tier, p.id))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Computes the explanation for a flow in model `m`.
pub fn explain(
    m: &PolicyModel,
    from: &str,
    to: &str,
    port: &str,
    ns: &str,
) -> anyhow::Result<Explanation> {
    let spec = parse_port(port)?;
    let src = resolve(m, from, ns)?;
    let dst = resolve(m, to, ns)?;
    if src.ip.is_ipv4() != dst.ip.is_ipv4() {
        bail!(
            "{} and {} are of different address families",
            src.ip,
            dst.ip
        );
    }
    let flow = Flow {
        src,
        dst,
        protocol: spec.protocol,
        // The client's port: an ephemeral one, as Linux picks them.
        src_port: spec.port.map(|_| 40000),
        dst_port: spec.port,
        icmp: spec.icmp,
    };
    Ok(Explanation {
        from: end(m, &src),
        to: end(m, &dst),
        flow: spec,
        verdict: m.evaluate(&flow),
    })
}

fn rule_text(p: &margay_datastore::policy::PolicyId, dir: PolicyType, i: usize) -> String {
    let d = match dir {
        PolicyType::Ingress => "ingress",
        PolicyType::Egress => "egress",
    };
    format!("{p} {d} rule {}", i + 1)
}

fn describe(by: &DecidedBy, dir: PolicyType) -> String {
    match by {
        DecidedBy::Rule(r) => format!(
            "{} by tier '{}', policy {} ({:?})",
            r.action,
            r.tier,
            rule_text(&r.policy, dir, r.rule),
            r.policy.kind
        ),
        DecidedBy::EndOfTier { tier } => format!(
            "Deny at the end of tier '{tier}': its policies selected the endpoint and none allowed the flow"
        ),
        DecidedBy::Profile {
            profile,
            rule,
            action,
        } => format!(
            "{action} by profile {profile} rule {} (no policy decided)",
            rule + 1
        ),
        DecidedBy::NoProfileMatched => {
            "Deny: no policy decided and no profile rule matched".to_string()
        }
        DecidedBy::HostToLocalWorkload => {
            "Allow: the node's own traffic to its workloads always passes".to_string()
        }
        DecidedBy::EndpointToHost { action, after } => format!(
            "{action:?} by defaultEndpointToHostAction (traffic to the workload's own node), after: {}",
            describe(after, dir)
        ),
    }
}

fn decision_text(out: &mut String, label: &str, d: &Decision) {
    let _ = writeln!(
        out,
        "{label} at {}: {}",
        d.endpoint,
        describe(&d.decided_by, d.direction)
    );
    for s in &d.trace {
        let line = match s {
            Step::Logged(r) => format!("logged by {}", rule_text(&r.policy, d.direction, r.rule)),
            Step::Passed(r) => format!(
                "passed tier '{}' at {}",
                r.tier,
                rule_text(&r.policy, d.direction, r.rule)
            ),
            Step::NoRuleMatched { tier, policy } => {
                format!("no rule of {policy} (tier '{tier}') matched")
            }
            Step::TierDefaultPass { tier } => {
                format!("tier '{tier}' ended and passes by its defaultAction")
            }
        };
        let _ = writeln!(out, "  - {line}");
    }
}

fn end_text(e: &End) -> String {
    match (&e.endpoint, &e.host_of) {
        (Some(ep), _) => format!("{ep} ({})", e.ip),
        (None, Some(node)) => format!("node {node} ({})", e.ip),
        (None, None) => format!("{} (not an endpoint)", e.ip),
    }
}

/// The text form.
pub fn render_text(x: &Explanation) -> String {
    let mut out = String::new();
    let proto = match x.flow.protocol {
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        1 => "icmp".to_string(),
        58 => "icmpv6".to_string(),
        132 => "sctp".to_string(),
        n => n.to_string(),
    };
    let what = match (x.flow.port, x.flow.icmp) {
        (Some(p), _) => format!("{p}/{proto}"),
        (None, Some((t, c))) => format!("{proto} type {t} code {c}"),
        _ => proto,
    };
    let _ = writeln!(
        out,
        "{} -> {} {what}: {}",
        end_text(&x.from),
        end_text(&x.to),
        if x.verdict.allowed {
            "ALLOWED"
        } else {
            "DENIED"
        }
    );
    if let Some(d) = &x.verdict.egress {
        decision_text(&mut out, "egress", d);
    } else {
        let _ = writeln!(
            out,
            "egress: the source is not a workload endpoint; no egress policy applies"
        );
    }
    if let Some(d) = &x.verdict.ingress {
        decision_text(&mut out, "ingress", d);
    } else {
        let _ = writeln!(
            out,
            "ingress: the destination is not a workload endpoint; no ingress policy applies"
        );
    }
    for (label, e) in [("source", &x.from), ("destination", &x.to)] {
        if !e.policies.is_empty() {
            let _ = writeln!(
                out,
                "policies selecting the {label}: {}",
                e.policies.join(", ")
            );
        }
    }
    out
}

/// Runs `policy explain`; returns whether the flow is allowed.
pub async fn run(store: &Store, args: &ExplainArgs) -> anyhow::Result<bool> {
    let res = load::load(store).await?;
    let (m, errors) = PolicyModel::build(&res);
    for e in errors {
        eprintln!("warning: left out: {e}");
    }
    let x = explain(&m, &args.from, &args.to, &args.port, &args.namespace)?;
    match args.output {
        ExplainOutput::Text => print!("{}", render_text(&x)),
        ExplainOutput::Json => println!("{}", serde_json::to_string_pretty(&x)?),
    }
    Ok(x.verdict.allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_protocols_parse() {
        assert_eq!(
            parse_port("80/tcp").unwrap(),
            PortSpec {
                protocol: 6,
                port: Some(80),
                icmp: None
            }
        );
        assert_eq!(parse_port("53/UDP").unwrap().protocol, 17);
        assert_eq!(parse_port("443").unwrap().protocol, 6);
        assert_eq!(parse_port("icmp").unwrap().icmp, Some((8, 0)));
        assert_eq!(parse_port("icmp/3/1").unwrap().icmp, Some((3, 1)));
        assert_eq!(parse_port("icmpv6").unwrap().icmp, Some((128, 0)));
        assert!(parse_port("80/icmp").is_err());
        assert!(parse_port("http/tcp").is_err());
        assert!(parse_port("icmp/x").is_err());
    }
}
