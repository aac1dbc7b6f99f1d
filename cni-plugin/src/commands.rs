//! The CNI commands: ADD, DEL, CHECK, GC and STATUS, each turned into felix requests (and
//! delegated IPAM plugin runs), with felix's answer rendered as the CNI result.

use crate::env::{Command, Environment};
use crate::error::{CniError, code};
use crate::felix::{self, Client};
use crate::ipam;
use crate::netconf::{Ipam, NetConf};
use crate::result::{CniResult, dns_from_netconf};
use margay_proto::felix::v1 as pb;
use std::future::Future;
use std::path::Path;

/// What the command prints on stdout on success (nothing for DEL, CHECK, GC, STATUS).
pub type Output = Option<String>;

/// Runs `env.command` for `conf`; `stdin` is the configuration as received (for IPAM plugins).
pub fn run(env: &Environment, conf: &NetConf, stdin: &[u8]) -> Result<Output, CniError> {
    let v = conf.cni_version;
    match env.command {
        Command::Add => add(env, conf, stdin).map(|r| Some(r.render(v).to_string())),
        Command::Del => del(env, conf, stdin).map(|()| None),
        Command::Check if !v.has_check() => Err(not_in_version("CHECK", v.as_str(), "0.4.0")),
        Command::Check => check(env, conf, stdin).map(|()| None),
        Command::Gc if !v.has_gc_and_status() => Err(not_in_version("GC", v.as_str(), "1.1.0")),
        Command::Gc => gc(env, conf, stdin).map(|()| None),
        Command::Status if !v.has_gc_and_status() => {
            Err(not_in_version("STATUS", v.as_str(), "1.1.0"))
        }
        Command::Status => status(env, conf, stdin).map(|()| None),
        Command::Version => Ok(Some(crate::version::version_json(v.as_str()))),
    }
}

fn not_in_version(cmd: &str, have: &str, need: &str) -> CniError {
    CniError::new(
        code::INCOMPATIBLE_VERSION,
        format!("{cmd} needs cniVersion {need} or newer; the configuration says {have}"),
    )
}

/// Runs one felix exchange on a single-threaded runtime (the plugin lives for one request).
fn with_felix<T, F, Fut>(conf: &NetConf, f: F) -> Result<T, CniError>
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = Result<T, CniError>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::new(code::IO_FAILURE, format!("cannot start the runtime: {e}")))?;
    rt.block_on(async {
        let client = felix::connect(Path::new(&conf.felix_socket)).await?;
        f(client).await
    })
}

fn attachment(env: &Environment) -> pb::Attachment {
    pb::Attachment {
        container_id: env.container_id.clone(),
        interface_name: env.ifname.clone(),
    }
}

fn workload(env: &Environment, conf: &NetConf) -> pb::Workload {
    pb::Workload {
        namespace: env.args.pod_namespace.clone(),
        name: env.args.pod_name.clone(),
        labels: conf
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn add(env: &Environment, conf: &NetConf, stdin: &[u8]) -> Result<CniResult, CniError> {
    // Chained after another plugin: its result is passed on with ours appended.
    let prev = conf
        .prev_result
        .as_ref()
        .map(CniResult::parse)
        .transpose()?;
    let (ipam, delegated) = match &conf.ipam {
        Ipam::Margay {
            ipv4_pools,
            ipv6_pools,
            assign_ipv4,
            assign_ipv6,
        } => {
            let requested = env
                .args
                .ips
                .iter()
                .chain(&conf.runtime_ips)
                .cloned()
                .collect();
            let margay = pb::MargayIpam {
                ipv4_pools: ipv4_pools.clone(),
                ipv6_pools: ipv6_pools.clone(),
                requested_addresses: requested,
                assign_ipv4: *assign_ipv4,
                assign_ipv6: *assign_ipv6,
            };
            (pb::add_endpoint_request::Ipam::Margay(margay), None)
        }
        Ipam::Delegated { plugin } => {
            let allocated = ipam::add(env, plugin, stdin)?;
            tracing::info!(plugin, ips = ?allocated.ips.iter().map(|i| i.address.to_string()).collect::<Vec<_>>(), "delegated IPAM allocated");
            let d = pb::DelegatedIpam {
                plugin: plugin.clone(),
                ips: felix::ips_to_pb(&allocated.ips),
                routes: felix::routes_to_pb(&allocated.routes),
            };
            (
                pb::add_endpoint_request::Ipam::Delegated(d),
                Some((plugin, allocated)),
            )
        }
    };
    let request = pb::AddEndpointRequest {
        attachment: Some(attachment(env)),
        netns: env.netns.clone(),
        workload: Some(workload(env, conf)),
        network_name: conf.name.clone(),
        mtu: conf.mtu.unwrap_or(0),
        node_name: conf.nodename.clone(),
        ipam: Some(ipam),
    };
    let answer = with_felix(conf, |mut c| async move {
        c.add_endpoint(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| felix::status_to_cni("ADD", &s))
    });
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            // Give the delegated addresses back: a failed ADD holds nothing.
            if let Some((plugin, _)) = &delegated
                && let Err(release) = ipam::exec(env, plugin, Command::Del, stdin)
            {
                tracing::warn!(plugin = %plugin, error = %release, "releasing delegated addresses after a failed ADD");
            }
            return Err(e);
        }
    };
    tracing::info!(endpoint = %answer.endpoint, container = %env.container_id, "felix added the endpoint");
    let mut result = felix::result_from_pb(answer.result.unwrap_or_default())?;
    if result.dns.is_empty()
        && let Some((_, allocated)) = &delegated
    {
        result.dns = allocated.dns.clone();
    }
    if result.dns.is_empty()
        && let Some(dns) = &conf.dns
    {
        result.dns = dns_from_netconf(dns);
    }
    Ok(match prev {
        Some(prev) => result.appended_to(prev),
        None => result,
    })
}

fn del(env: &Environment, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    let delegated = match &conf.ipam {
        Ipam::Delegated { plugin } => Some(plugin),
        Ipam::Margay { .. } => None,
    };
    let request = pb::DeleteEndpointRequest {
        attachment: Some(attachment(env)),
        netns: env.netns.clone(),
        workload: Some(workload(env, conf)),
        network_name: conf.name.clone(),
        delegated_ipam: delegated.is_some(),
    };
    with_felix(conf, |mut c| async move {
        match c.delete_endpoint(request).await {
            Ok(r) => {
                let r = r.into_inner();
                tracing::info!(container = %env.container_id, existed = r.existed, released = ?r.released_addresses, "felix deleted the endpoint");
                Ok(())
            }
            // DEL is idempotent: already gone is success.
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(felix::status_to_cni("DEL", &s)),
        }
    })?;
    if let Some(plugin) = delegated {
        ipam::exec(env, plugin, Command::Del, stdin)?;
    }
    Ok(())
}

fn check(env: &Environment, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            code::INVALID_NETWORK_CONFIG,
            "invalid network configuration: CHECK needs prevResult (the result of ADD)",
        )
    })?;
    let expected = CniResult::parse(prev)?;
    let request = pb::CheckEndpointRequest {
        attachment: Some(attachment(env)),
        netns: env.netns.clone(),
        workload: Some(workload(env, conf)),
        network_name: conf.name.clone(),
        mtu: conf.mtu.unwrap_or(0),
        expected: Some(felix::result_to_pb(&expected)),
    };
    let answer = with_felix(conf, |mut c| async move {
        c.check_endpoint(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| felix::status_to_cni("CHECK", &s))
    })?;
    if !answer.differences.is_empty() {
        let details: Vec<String> = answer
            .differences
            .iter()
            .map(|d| {
                let actual = if d.actual.is_empty() {
                    "missing"
                } else {
                    &d.actual
                };
                format!("{}: expected {}, found {}", d.subject, d.expected, actual)
            })
            .collect();
        return Err(CniError::new(
            code::ENDPOINT_DIFFERS,
            format!(
                "endpoint of container {} differs from what ADD made ({} differences)",
                env.container_id,
                details.len()
            ),
        )
        .with_details(details.join("; ")));
    }
    if let Ipam::Delegated { plugin } = &conf.ipam {
        ipam::exec(env, plugin, Command::Check, stdin)?;
    }
    Ok(())
}

fn gc(env: &Environment, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    let request = pb::GarbageCollectRequest {
        network_name: conf.name.clone(),
        valid_attachments: conf
            .valid_attachments
            .iter()
            .map(|(id, ifname)| pb::Attachment {
                container_id: id.clone(),
                interface_name: ifname.clone(),
            })
            .collect(),
    };
    let answer = with_felix(conf, |mut c| async move {
        c.garbage_collect(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| felix::status_to_cni("GC", &s))
    })?;
    for r in &answer.released {
        let a = r.attachment.clone().unwrap_or_default();
        tracing::info!(container = %a.container_id, ifname = %a.interface_name, addresses = ?r.addresses, "GC released");
    }
    if let Ipam::Delegated { plugin } = &conf.ipam {
        delegate_tolerating_old_plugin(env, plugin, Command::Gc, stdin)?;
    }
    Ok(())
}

fn status(env: &Environment, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    let answer = with_felix(conf, |mut c| async move {
        c.status(pb::StatusRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| felix::status_to_cni("STATUS", &s))
    })
    .map_err(|e| CniError::new(code::NOT_AVAILABLE, e.msg).with_details(e.details))?;
    if !answer.ready {
        let reason = if answer.reason.is_empty() {
            "not ready"
        } else {
            &answer.reason
        };
        // Not synced: the dataplane may lag the model, so existing pods may be affected too.
        let c = if answer.felix_synced {
            code::NOT_AVAILABLE
        } else {
            code::NOT_AVAILABLE_LIMITED_CONNECTIVITY
        };
        return Err(
            CniError::new(c, format!("felix is not ready: {reason}")).with_details(format!(
                "felix synced: {}, etcd reachable: {}",
                answer.felix_synced, answer.etcd_reachable
            )),
        );
    }
    if let Ipam::Delegated { plugin } = &conf.ipam {
        delegate_tolerating_old_plugin(env, plugin, Command::Status, stdin)?;
    }
    Ok(())
}

/// GC and STATUS are passed to the IPAM plugin; one that predates 1.1.0 answers code 1, which
/// only means it has nothing to collect or report.
fn delegate_tolerating_old_plugin(
    env: &Environment,
    plugin: &str,
    command: Command,
    stdin: &[u8],
) -> Result<(), CniError> {
    match ipam::exec(env, plugin, command, stdin) {
        Err(e) if e.code == code::INCOMPATIBLE_VERSION => {
            tracing::info!(plugin, command = command.as_str(), error = %e, "IPAM plugin predates this command");
            Ok(())
        }
        other => other.map(|_| ()),
    }
}
