//! Names an endpoint gets: the host side of its veth, its WorkloadEndpoint, its IPAM handle,
//! its container interface's MAC. Pure functions, the same on every node and every restart.

use crate::netlink::Mac;

/// The pod (namespace, name), or `None` for a container that is not a pod.
pub fn pod_of(namespace: &str, name: &str) -> Option<(String, String)> {
    (!namespace.is_empty() && !name.is_empty()).then(|| (namespace.to_string(), name.to_string()))
}

/// The host side of the veth: `prefix` (FelixConfiguration `interfacePrefix`'s first, `cali`
/// by default) + [`host_ifname_hash`] (Calico's naming, so an operator's tooling finds it).
pub fn host_ifname(prefix: &str, pod: Option<&(String, String)>, container_id: &str) -> String {
    format!("{prefix}{}", host_ifname_hash(pod, container_id))
}

/// The part of the veth's name after the prefix: the first 11 hex characters of
/// sha1("namespace.pod"), or of the container id for a container that is not a pod.
pub fn host_ifname_hash(pod: Option<&(String, String)>, container_id: &str) -> String {
    let key = match pod {
        Some((ns, name)) => format!("{ns}.{name}"),
        None => container_id.to_string(),
    };
    let digest = sha1_smol::Sha1::from(key.as_bytes()).digest().to_string();
    digest[..11].to_string()
}

/// Calico's escaping inside WorkloadEndpoint names: a '-' in a part is doubled.
fn escape(part: &str) -> String {
    part.replace('-', "--")
}

/// The WorkloadEndpoint's (namespace, name): `<node>-k8s-<pod>-<ifname>` in the pod's
/// namespace, or `<node>-cni-<container>-<ifname>` in `default` for a plain container.
pub fn endpoint_name(
    node: &str,
    pod: Option<&(String, String)>,
    container_id: &str,
    ifname: &str,
) -> (String, String) {
    match pod {
        Some((ns, name)) => (
            ns.clone(),
            format!("{}-k8s-{}-{}", escape(node), escape(name), escape(ifname)),
        ),
        None => (
            "default".to_string(),
            format!(
                "{}-cni-{}-{}",
                escape(node),
                escape(container_id),
                escape(ifname)
            ),
        ),
    }
}

/// The IPAM handle of an attachment's addresses: `<network_name>.<container_id>`.
pub fn handle(network_name: &str, container_id: &str) -> String {
    format!("{network_name}.{container_id}")
}

/// The container interface's MAC: locally administered unicast, from sha1 of the container
/// id and interface name. Known before the veth exists, so the WorkloadEndpoint (which
/// carries it) is written while the veth is being built.
pub fn container_mac(container_id: &str, ifname: &str) -> Mac {
    let digest = sha1_smol::Sha1::from(format!("{container_id}/{ifname}").as_bytes()).digest();
    let b = digest.bytes();
    [(b[0] & 0xfe) | 0x02, b[1], b[2], b[3], b[4], b[5]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_mac_is_locally_administered_unicast_and_per_attachment() {
        let m = container_mac("ctr", "eth0");
        assert_eq!(m[0] & 0x03, 0x02, "{m:x?}");
        assert_eq!(m, container_mac("ctr", "eth0"));
        assert_ne!(m, container_mac("ctr", "eth1"));
        assert_ne!(m, container_mac("ctr2", "eth0"));
    }

    #[test]
    fn host_ifname_is_cali_and_sha1_of_namespace_dot_pod() {
        // `echo -n default.web-0 | sha1sum` = 0d7763386da219ddff1f...
        let pod = ("default".to_string(), "web-0".to_string());
        assert_eq!(host_ifname("cali", Some(&pod), "ctr"), "cali0d7763386da");
        assert_eq!(host_ifname("tap", Some(&pod), "ctr"), "tap0d7763386da");
        assert_ne!(
            host_ifname("cali", Some(&pod), "ctr"),
            host_ifname("cali", None, "ctr")
        );
    }

    #[test]
    fn endpoint_names_escape_dashes() {
        let pod = ("kube-system".to_string(), "dns-1".to_string());
        assert_eq!(
            endpoint_name("node-1", Some(&pod), "c", "eth0"),
            ("kube-system".into(), "node--1-k8s-dns--1-eth0".into())
        );
        assert_eq!(
            endpoint_name("n1", None, "abc", "eth0"),
            ("default".into(), "n1-cni-abc-eth0".into())
        );
        assert_eq!(handle("k8s-pod-network", "abc"), "k8s-pod-network.abc");
    }
}
