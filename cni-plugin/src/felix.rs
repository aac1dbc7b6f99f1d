//! The felix side of the plugin: a gRPC channel over felix's unix socket, and the mapping of
//! felix's answers (results, status codes) to CNI results and CNI error codes.

use crate::error::{CniError, code};
use crate::result::{CniResult, Dns, Interface, IpConfig, Route};
use hyper_util::rt::TokioIo;
use margay_proto::felix::v1 as pb;
use std::path::Path;
use std::time::Duration;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

/// How long the plugin waits to connect to felix.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may take (ADD goes through etcd).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

pub type Client = pb::endpoints_client::EndpointsClient<Channel>;

/// Connects to felix's socket; an unreachable felix is "try again later" (11).
///
/// One connection: the plugin makes one request, so the stream dialled here (which fails at
/// once, in the OS's words, when felix is not there) is the channel's, not a probe followed by
/// a second dial as daemons' long-lived channels do (`margay_common::uds`); felix accepts
/// one connection per ADD instead of two.
pub async fn connect(socket: &Path) -> Result<Client, CniError> {
    let unreachable = |why: String| {
        CniError::new(
            code::TRY_AGAIN_LATER,
            format!("felix is unreachable at {}: {why}", socket.display()),
        )
    };
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(socket)).await {
        Err(_) => return Err(unreachable(format!("timed out after {CONNECT_TIMEOUT:?}"))),
        Ok(Err(e)) => return Err(unreachable(os_reason(&e))),
        Ok(Ok(s)) => s,
    };
    let mut stream = Some(stream);
    let channel = Endpoint::from_static("http://margay.invalid")
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_| {
            let s = stream.take();
            async move {
                s.map(TokioIo::new).ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "the connection to felix was closed",
                    )
                })
            }
        }))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    Ok(pb::endpoints_client::EndpointsClient::new(channel))
}

/// "No such file or directory" rather than "No such file or directory (os error 2)".
fn os_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// felix's gRPC status as a CNI error; `what` names the request ("ADD", "DEL", ...).
pub fn status_to_cni(what: &str, s: &tonic::Status) -> CniError {
    use tonic::Code;
    let c = match s.code() {
        // Unknown and Cancelled are what a connection cut mid-request gives (felix killed or
        // restarting); felix itself never answers them, so they mean "try again later" too.
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled => {
            code::TRY_AGAIN_LATER
        }
        Code::NotFound => code::UNKNOWN_CONTAINER,
        Code::ResourceExhausted => code::NO_FREE_ADDRESS,
        Code::AlreadyExists => code::ADDRESS_IN_USE,
        Code::Internal => code::DATAPLANE_FAILURE,
        _ => code::FELIX_REFUSED,
    };
    let msg = if s.message().is_empty() {
        format!("felix failed {what}: {:?}", s.code())
    } else {
        format!("felix failed {what}: {}", s.message())
    };
    CniError::new(c, msg).with_details(format!("gRPC status {:?}", s.code()))
}

/// Renders felix's result as the plugin's model; a malformed answer is code 106.
pub fn result_from_pb(r: pb::EndpointResult) -> Result<CniResult, CniError> {
    let bad = |what: String| {
        CniError::new(
            code::BAD_FELIX_ANSWER,
            format!("felix answered a malformed result: {what}"),
        )
    };
    let n_ifs = r.interfaces.len();
    let interfaces = r
        .interfaces
        .into_iter()
        .map(|i| Interface {
            name: i.name,
            mac: i.mac,
            sandbox: i.sandbox,
            mtu: (i.mtu != 0).then_some(i.mtu),
        })
        .collect();
    let mut ips = Vec::new();
    for ip in r.ips {
        let address = ip
            .address
            .parse()
            .map_err(|_| bad(format!("address {:?} is not ADDR/LEN", ip.address)))?;
        let gateway = opt_ip(&ip.gateway).map_err(bad)?;
        let interface = match ip.interface {
            Some(i) if (i as usize) < n_ifs => Some(i as usize),
            Some(i) => return Err(bad(format!("interface index {i} of {n_ifs} interfaces"))),
            None => None,
        };
        ips.push(IpConfig {
            interface,
            address,
            gateway,
        });
    }
    let mut routes = Vec::new();
    for rt in r.routes {
        let dst = rt
            .dst
            .parse()
            .map_err(|_| bad(format!("route dst {:?} is not a CIDR", rt.dst)))?;
        routes.push(Route {
            dst,
            gw: opt_ip(&rt.gw).map_err(bad)?,
        });
    }
    let dns = r
        .dns
        .map(|d| Dns {
            nameservers: d.nameservers,
            domain: d.domain,
            search: d.search,
            options: d.options,
        })
        .unwrap_or_default();
    Ok(CniResult {
        interfaces,
        ips,
        routes,
        dns,
    })
}

/// The plugin's model as felix's message (delegated IPs, CHECK's expected result).
pub fn result_to_pb(r: &CniResult) -> pb::EndpointResult {
    pb::EndpointResult {
        interfaces: r
            .interfaces
            .iter()
            .map(|i| pb::Interface {
                name: i.name.clone(),
                mac: i.mac.clone(),
                sandbox: i.sandbox.clone(),
                mtu: i.mtu.unwrap_or(0),
            })
            .collect(),
        ips: ips_to_pb(&r.ips),
        routes: routes_to_pb(&r.routes),
        dns: (!r.dns.is_empty()).then(|| pb::Dns {
            nameservers: r.dns.nameservers.clone(),
            domain: r.dns.domain.clone(),
            search: r.dns.search.clone(),
            options: r.dns.options.clone(),
        }),
    }
}

pub fn ips_to_pb(ips: &[IpConfig]) -> Vec<pb::IpConfig> {
    ips.iter()
        .map(|ip| pb::IpConfig {
            interface: ip.interface.and_then(|i| u32::try_from(i).ok()),
            address: ip.address.to_string(),
            gateway: ip.gateway.map(|g| g.to_string()).unwrap_or_default(),
        })
        .collect()
}

pub fn routes_to_pb(routes: &[Route]) -> Vec<pb::Route> {
    routes
        .iter()
        .map(|r| pb::Route {
            dst: r.dst.to_string(),
            gw: r.gw.map(|g| g.to_string()).unwrap_or_default(),
        })
        .collect()
}

fn opt_ip(s: &str) -> Result<Option<std::net::IpAddr>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| format!("{s:?} is not an IP address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_grpc_codes_to_cni_codes() {
        let cases = [
            (tonic::Code::Unavailable, code::TRY_AGAIN_LATER),
            (tonic::Code::DeadlineExceeded, code::TRY_AGAIN_LATER),
            (tonic::Code::Unknown, code::TRY_AGAIN_LATER),
            (tonic::Code::Cancelled, code::TRY_AGAIN_LATER),
            (tonic::Code::NotFound, code::UNKNOWN_CONTAINER),
            (tonic::Code::ResourceExhausted, code::NO_FREE_ADDRESS),
            (tonic::Code::AlreadyExists, code::ADDRESS_IN_USE),
            (tonic::Code::Internal, code::DATAPLANE_FAILURE),
            (tonic::Code::InvalidArgument, code::FELIX_REFUSED),
            (tonic::Code::FailedPrecondition, code::FELIX_REFUSED),
        ];
        for (grpc, cni) in cases {
            let e = status_to_cni(
                "ADD",
                &tonic::Status::new(grpc, "etcd unreachable: timeout"),
            );
            assert_eq!(e.code, cni, "{grpc:?}");
            assert_eq!(e.msg, "felix failed ADD: etcd unreachable: timeout");
        }
    }

    #[test]
    fn malformed_felix_answer_is_code_106() {
        let r = pb::EndpointResult {
            ips: vec![pb::IpConfig {
                interface: Some(3),
                address: "10.0.0.1/32".into(),
                gateway: String::new(),
            }],
            ..Default::default()
        };
        assert_eq!(result_from_pb(r).unwrap_err().code, code::BAD_FELIX_ANSWER);
        let r = pb::EndpointResult {
            ips: vec![pb::IpConfig {
                interface: None,
                address: "10.0.0.1".into(),
                gateway: String::new(),
            }],
            ..Default::default()
        };
        assert_eq!(result_from_pb(r).unwrap_err().code, code::BAD_FELIX_ANSWER);
    }

    #[tokio::test]
    async fn missing_socket_is_try_again_later() {
        let dir = tempfile::tempdir().unwrap();
        let e = connect(&dir.path().join("felix.sock")).await.unwrap_err();
        assert_eq!(e.code, code::TRY_AGAIN_LATER);
        assert!(e.msg.contains("No such file or directory"), "{}", e.msg);
    }
}
