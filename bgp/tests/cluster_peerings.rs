//! The peering rules of cluster mode, from manifests in the shapes a Calico operator writes.

use margay_bgp::cluster::{Local, Model, PeeringError, desired_config, plan};
use margay_bgp::config::{Config, Neighbor, NextHop, PeerType};
use margay_bgp::policy::Role;
use margay_datastore::resources::{AnyResource, parse_documents};
use std::net::IpAddr;

/// The incremental planner against the full plan.
#[path = "cluster_peerings/incremental.rs"]
mod incremental;

fn model(yaml: &str) -> Model {
    let mut m = Model::default();
    for r in parse_documents(yaml).expect("test manifests parse") {
        match r {
            AnyResource::Node(n) => {
                m.nodes.insert(n.name().to_string(), n);
            }
            AnyResource::BgpPeer(p) => {
                m.peers.insert(p.name().to_string(), p);
            }
            AnyResource::BgpConfiguration(c) if c.name() == "default" => m.bgp = Some(c.spec),
            AnyResource::BgpFilter(f) => {
                m.filters.insert(f.name().to_string(), f);
            }
            AnyResource::IpPool(p) => {
                m.pools.insert(p.name().to_string(), p);
            }
            other => panic!("unexpected resource {other:?}"),
        }
    }
    m
}

fn local(node: &str) -> Local {
    Local {
        node: node.into(),
        socket: "/tmp/x.sock".into(),
        http_address: "127.0.0.1".parse().unwrap(),
        http_port: 0,
        listen_address: "::".parse().unwrap(),
        connect_retry: 1,
        hold_time: 30,
        secrets_dir: std::env::temp_dir().join("margay-no-secrets"),
        router_id: Default::default(),
    }
}

fn node(name: &str, ip: &str, extra: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {name}\n{extra}spec:\n  bgp:\n    ipv4Address: {ip}/24\n---\n"
    )
}

fn neighbor<'a>(c: &'a Config, addr: &str) -> Option<&'a Neighbor> {
    let a: IpAddr = addr.parse().unwrap();
    c.neighbors.iter().find(|n| *n.address.get_ref() == a)
}

fn addresses(c: &Config) -> Vec<String> {
    let mut v: Vec<String> = c
        .neighbors
        .iter()
        .map(|n| n.address.get_ref().to_string())
        .collect();
    v.sort();
    v
}

fn three_nodes() -> String {
    format!(
        "{}{}{}",
        node("n1", "10.0.0.1", ""),
        node("n2", "10.0.0.2", ""),
        node("n3", "10.0.0.3", "")
    )
}

#[test]
fn mesh_peers_every_other_node_from_the_node_address() {
    let m = model(&three_nodes());
    let c = desired_config(&m, &local("n2")).unwrap();
    assert_eq!(
        c.router_id(),
        "10.0.0.2".parse::<std::net::Ipv4Addr>().unwrap()
    );
    assert_eq!(c.asn(), 64512, "Calico's default AS");
    assert_eq!(addresses(&c), ["10.0.0.1", "10.0.0.3"]);
    let n1 = neighbor(&c, "10.0.0.1").unwrap();
    let n3 = neighbor(&c, "10.0.0.3").unwrap();
    assert_eq!(n1.peer_type, Some(PeerType::Mesh));
    assert!(
        !n1.passive && !n3.passive,
        "both ends connect; collision detection keeps one"
    );
    assert_eq!(n1.asn, 64512);
    assert_eq!(
        n1.source_address,
        Some("10.0.0.2".parse().unwrap()),
        "sessions leave from the node's address"
    );
}

#[test]
fn mesh_off_leaves_no_node_sessions() {
    let yaml = three_nodes()
        + "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  nodeToNodeMeshEnabled: false\n  asNumber: 65010\n";
    let c = desired_config(&model(&yaml), &local("n1")).unwrap();
    assert!(c.neighbors.is_empty(), "{:?}", addresses(&c));
    assert_eq!(c.asn(), 65010, "the cluster AS from BGPConfiguration");
}

#[test]
fn global_peer_applies_to_every_node_and_node_specific_only_to_its_node() {
    let yaml = three_nodes()
        + "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 10.0.0.254\n  asNumber: 65000\n  password:\n    value: s3cret\n---\n"
        + "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: n3-border\nspec:\n  node: n3\n  peerIP: '192.0.2.1:1790'\n  asNumber: 65001\n  keepOriginalNextHop: true\n";
    let m = model(&yaml);
    let c1 = desired_config(&m, &local("n1")).unwrap();
    let tor = neighbor(&c1, "10.0.0.254").unwrap();
    assert_eq!(
        (tor.asn, tor.peer_type, tor.passive),
        (65000, Some(PeerType::Global), false)
    );
    assert_eq!(
        tor.password.as_ref().map(margay_common::Secret::expose),
        Some("s3cret")
    );
    assert!(
        neighbor(&c1, "192.0.2.1").is_none(),
        "n3's peer is not n1's"
    );
    let c3 = desired_config(&m, &local("n3")).unwrap();
    let b = neighbor(&c3, "192.0.2.1").unwrap();
    assert_eq!(
        (b.port, b.peer_type, b.next_hop),
        (1790, Some(PeerType::NodeSpecific), Some(NextHop::Keep))
    );
}

fn rr_cluster() -> String {
    let rr = "  labels:\n    route-reflector: 'true'\n";
    format!(
        "{}{}{}{}",
        node("n1", "10.0.0.1", rr),
        node("n2", "10.0.0.2", rr),
        node("n3", "10.0.0.3", ""),
        node("n4", "10.0.0.4", "")
    )
    .replace(
        "name: n1\n  labels:\n    route-reflector: 'true'\nspec:\n  bgp:\n",
        "name: n1\n  labels:\n    route-reflector: 'true'\nspec:\n  bgp:\n    routeReflectorClusterID: 244.0.0.1\n",
    )
    .replace(
        "name: n2\n  labels:\n    route-reflector: 'true'\nspec:\n  bgp:\n",
        "name: n2\n  labels:\n    route-reflector: 'true'\nspec:\n  bgp:\n    routeReflectorClusterID: 244.0.0.1\n",
    ) + "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: peer-with-rrs\nspec:\n  nodeSelector: all()\n  peerSelector: route-reflector == 'true'\n"
}

#[test]
fn reflector_clients_stay_in_the_mesh_and_reflectors_leave_it() {
    let m = model(&rr_cluster());
    let c3 = desired_config(&m, &local("n3")).unwrap();
    assert_eq!(
        addresses(&c3),
        ["10.0.0.1", "10.0.0.2", "10.0.0.4"],
        "a client meshes with the other non-reflector while the mesh is on, as Calico"
    );
    assert_eq!(
        neighbor(&c3, "10.0.0.4").unwrap().peer_type,
        Some(PeerType::Mesh)
    );
    for rr in ["10.0.0.1", "10.0.0.2"] {
        let n = neighbor(&c3, rr).unwrap();
        assert_eq!(n.peer_type, Some(PeerType::RouteReflector));
        assert!(!n.route_reflector_client);
    }
    let c1 = desired_config(&m, &local("n1")).unwrap();
    assert_eq!(c1.cluster_id(), Some("244.0.0.1".parse().unwrap()));
    assert_eq!(
        addresses(&c1),
        ["10.0.0.2", "10.0.0.3", "10.0.0.4"],
        "a reflector ignores the mesh: only its BGPPeer sessions"
    );
    let client = neighbor(&c1, "10.0.0.3").unwrap();
    assert_eq!(client.peer_type, Some(PeerType::RouteReflectorClient));
    assert!(client.route_reflector_client);
    let other_rr = neighbor(&c1, "10.0.0.2").unwrap();
    assert!(
        !other_rr.route_reflector_client,
        "reflectors of one cluster are not each other's clients"
    );
    assert_ne!(other_rr.peer_type, Some(PeerType::Mesh));
}

#[test]
fn without_a_peer_selector_a_reflector_has_no_sessions_and_the_rest_mesh_without_it() {
    let yaml = rr_cluster()
        .split("apiVersion: projectcalico.org/v3\nkind: BGPPeer")
        .next()
        .unwrap()
        .to_string();
    let m = model(&yaml);
    assert!(
        desired_config(&m, &local("n1"))
            .unwrap()
            .neighbors
            .is_empty()
    );
    assert_eq!(
        addresses(&desired_config(&m, &local("n4")).unwrap()),
        ["10.0.0.3"]
    );
}

#[test]
fn an_external_ibgp_peer_of_a_reflector_is_its_client_with_the_cluster_id() {
    let yaml = rr_cluster()
        + "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: ibgp-box\nspec:\n  node: n1\n  peerIP: 192.0.2.9\n  asNumber: 64512\n---\n"
        + "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: ebgp-box\nspec:\n  node: n1\n  peerIP: 192.0.2.10\n  asNumber: 65000\n";
    let c1 = desired_config(&model(&yaml), &local("n1")).unwrap();
    assert!(neighbor(&c1, "192.0.2.9").unwrap().route_reflector_client);
    assert!(
        !neighbor(&c1, "192.0.2.10").unwrap().route_reflector_client,
        "rr client only in the reflector's own AS"
    );
}

fn with(yaml: &str) -> Model {
    model(&(three_nodes() + yaml))
}

#[test]
fn a_global_peer_at_a_calico_node_is_one_way_and_reaches_its_listen_port() {
    let m = with(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  nodeToNodeMeshEnabled: false\n  listenPort: 1790\n---\n\
         apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: to-n2\nspec:\n  peerIP: 10.0.0.2\n  asNumber: 64512\n",
    );
    let c1 = desired_config(&m, &local("n1")).unwrap();
    assert_eq!(c1.listen_port, 1790);
    let n2 = neighbor(&c1, "10.0.0.2").unwrap();
    assert_eq!(n2.port, 1790, "a Calico node's listen port");
    assert!(
        n2.passive,
        "10.0.0.2 > 10.0.0.1: the higher address connects"
    );
    // The reverse peering: n2 peers with every node the global BGPPeer applies to.
    let c2 = desired_config(&m, &local("n2")).unwrap();
    assert_eq!(addresses(&c2), ["10.0.0.1", "10.0.0.3"]);
    let back = neighbor(&c2, "10.0.0.1").unwrap();
    assert!(!back.passive);
    assert_eq!(back.port, 1790);
    assert_eq!(back.peer_type, Some(PeerType::NodeSpecific));
}

fn secrets_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("margay-peerings-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(d.join("bgp-passwords")).unwrap();
    d
}

#[test]
fn bgp_peer_fields_map_to_the_session() {
    let dir = secrets_dir("fields");
    std::fs::write(dir.join("bgp-passwords/tor"), "from-secret").unwrap();
    let m = with(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 192.0.2.1\n  asNumber: 65000\n  maxRestartTime: 2m30s\n  keepOriginalNextHop: true\n  ttlSecurity: 2\n  password:\n    secretKeyRef:\n      name: bgp-passwords\n      key: tor\n---\n\
         apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: ibgp\nspec:\n  peerIP: 192.0.2.2\n  asNumber: 64512\n  keepOriginalNextHop: true\n  sourceAddress: None\n---\n\
         apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: lost\nspec:\n  peerIP: 192.0.2.3\n  asNumber: 65000\n  password:\n    secretKeyRef:\n      name: bgp-passwords\n      key: missing\n",
    );
    let mut l = local("n1");
    l.secrets_dir = dir.clone();
    let plan = margay_bgp::cluster::plan(&m, &l).unwrap();
    let c = &plan.config;
    let tor = neighbor(c, "192.0.2.1").unwrap();
    assert_eq!(tor.restart_time.as_ref().map(|t| *t.get_ref()), Some(150));
    assert_eq!(tor.next_hop, Some(NextHop::Keep));
    assert_eq!(tor.ttl_security.as_ref().map(|t| *t.get_ref()), Some(2));
    assert_eq!(
        tor.password.as_ref().map(margay_common::Secret::expose),
        Some("from-secret")
    );
    assert_eq!(
        tor.source_address,
        Some("10.0.0.1".parse().unwrap()),
        "sourceAddress defaults to UseNodeIP"
    );
    let ibgp = neighbor(c, "192.0.2.2").unwrap();
    assert_eq!(ibgp.next_hop, None, "next hop keep is for eBGP peers only");
    assert_eq!(ibgp.source_address, None, "sourceAddress: None");
    assert_eq!(ibgp.restart_time, None);
    let lost = neighbor(c, "192.0.2.3").unwrap();
    assert!(lost.password.is_none());
    assert!(
        plan.notes
            .iter()
            .any(|n| n.contains("bgp-passwords/missing")),
        "{:?}",
        plan.notes
    );
    // A rotated Secret is read on the next computation.
    std::fs::write(dir.join("bgp-passwords/tor"), "rotated").unwrap();
    let c = desired_config(&m, &l).unwrap();
    assert_eq!(
        neighbor(&c, "192.0.2.1")
            .unwrap()
            .password
            .as_ref()
            .map(margay_common::Secret::expose),
        Some("rotated")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bgp_configuration_fields_map_to_mesh_listener_and_origination() {
    let dir = secrets_dir("config");
    std::fs::write(dir.join("bgp-passwords/mesh"), "mesh-pw").unwrap();
    let m = with(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  nodeMeshMaxRestartTime: 90s\n  nodeMeshPassword:\n    secretKeyRef:\n      name: bgp-passwords\n      key: mesh\n  listenPort: 1791\n  bindMode: NodeIP\n  serviceClusterIPs:\n  - cidr: 10.96.0.0/12\n  serviceExternalIPs:\n  - cidr: 192.0.2.0/24\n  serviceLoadBalancerIPs:\n  - cidr: 198.51.100.0/24\n  - cidr: 10.96.0.0/12\n",
    );
    let mut l = local("n1");
    l.secrets_dir = dir.clone();
    let c = desired_config(&m, &l).unwrap();
    assert_eq!(c.listen_address, "10.0.0.1".parse::<IpAddr>().unwrap());
    assert_eq!(c.listen_port, 1791);
    let mut orig: Vec<String> = c.originated().iter().map(|n| n.to_string()).collect();
    orig.sort();
    assert_eq!(orig, ["10.96.0.0/12", "192.0.2.0/24", "198.51.100.0/24"]);
    for peer in ["10.0.0.2", "10.0.0.3"] {
        let n = neighbor(&c, peer).unwrap();
        assert_eq!(n.port, 1791, "other nodes listen on listenPort too");
        assert_eq!(n.restart_time.as_ref().map(|t| *t.get_ref()), Some(90));
        assert_eq!(
            n.password.as_ref().map(margay_common::Secret::expose),
            Some("mesh-pw")
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_node_without_address_or_resource_cannot_peer_and_says_why() {
    let yaml = "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: bare\nspec: {}\n";
    let m = model(yaml);
    assert_eq!(
        desired_config(&m, &local("bare")).unwrap_err(),
        PeeringError::NoAddress("bare".into())
    );
    assert_eq!(
        desired_config(&m, &local("ghost")).unwrap_err(),
        PeeringError::NoNode("ghost".into())
    );
    let err = desired_config(&m, &local("bare")).unwrap_err().to_string();
    assert!(err.contains("spec.bgp.ipv4Address"), "{err}");
}

#[test]
fn nodes_without_address_are_left_out_of_the_mesh() {
    let yaml = three_nodes()
        + "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: n4\nspec: {}\n";
    let c = desired_config(&model(&yaml), &local("n1")).unwrap();
    assert_eq!(addresses(&c), ["10.0.0.2", "10.0.0.3"]);
}

#[test]
fn ipv6_addresses_give_a_second_mesh_session() {
    let yaml = node("n1", "10.0.0.1", "").replace(
        "ipv4Address: 10.0.0.1/24\n",
        "ipv4Address: 10.0.0.1/24\n    ipv6Address: fd00::1/64\n",
    ) + &node("n2", "10.0.0.2", "").replace(
        "ipv4Address: 10.0.0.2/24\n",
        "ipv4Address: 10.0.0.2/24\n    ipv6Address: fd00::2/64\n",
    );
    let c = desired_config(&model(&yaml), &local("n1")).unwrap();
    assert_eq!(addresses(&c), ["10.0.0.2", "fd00::2"]);
    assert!(!neighbor(&c, "fd00::2").unwrap().passive);
}

/// Roles: mesh, selector and reverse peerings and a `peerIP` at a node are the cluster's; any
/// other `peerIP` is external, whatever its AS. A BGPPeer's `filters`, `localASNumber` and
/// `numAllowedLocalASNumbers` reach its session; a filter that does not exist is left out, with
/// a note naming the peer and the filter. IPPools and prefixAdvertisements become the policy
/// tables.
#[test]
fn roles_filters_and_policy_tables_follow_the_model() {
    let m = with(
        "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: transit\nspec:\n  exportV4:\n  - action: Accept\n    source: RemotePeers\n---\n\
         apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 192.0.2.1\n  asNumber: 64512\n  filters: [transit, missing]\n  localASNumber: 65010\n  numAllowedLocalASNumbers: 2\n  keepaliveTime: 20s\n---\n\
         apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: to-n3\nspec:\n  node: n1\n  peerIP: 10.0.0.3\n  asNumber: 64512\n---\n\
         apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  cidr: 10.244.0.0/16\n  disableBGPExport: true\n---\n\
         apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  communities:\n  - name: c\n    value: '65000:7'\n  prefixAdvertisements:\n  - cidr: 10.244.0.0/16\n    communities: [c]\n",
    );
    let p = plan(&m, &local("n1")).unwrap();
    let c = &p.config;
    let tor = neighbor(c, "192.0.2.1").unwrap();
    assert_eq!(
        tor.role,
        Some(Role::External),
        "same AS, yet no node's address"
    );
    let names: Vec<&str> = tor.filters.iter().map(|f| f.get_ref().as_str()).collect();
    assert_eq!(names, ["transit"]);
    assert_eq!(tor.local_asn.as_ref().map(|a| *a.get_ref()), Some(65010));
    assert_eq!(tor.allow_own_as.as_ref().map(|a| *a.get_ref()), Some(2));
    assert_eq!(tor.keepalive_time.as_ref().map(|k| *k.get_ref()), Some(20));
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("BGPPeer 'tor'") && n.contains("BGPFilter 'missing'")),
        "{:?}",
        p.notes
    );
    assert_eq!(neighbor(c, "10.0.0.3").unwrap().role, Some(Role::Cluster));
    assert_eq!(neighbor(c, "10.0.0.2").unwrap().role, Some(Role::Cluster));
    assert_eq!(c.filters.len(), 1);
    assert_eq!(c.pools.len(), 1);
    assert!(!c.pools[0].export);
    assert_eq!(c.advertise.len(), 1);
    assert_eq!(c.advertise[0].communities[0].get_ref(), "65000:7");
    // Reverse: n3 peers back with n1 as the cluster's.
    let c3 = desired_config(&m, &local("n3")).unwrap();
    assert_eq!(neighbor(&c3, "10.0.0.1").unwrap().role, Some(Role::Cluster));
}

#[test]
fn margay_bfd_fields_reach_peer_and_mesh_sessions() {
    let m = with(
        "apiVersion: margay.io/v1\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  bfd: {enabled: true, minTx: 200ms, multiplier: 5}\n---\n\
         apiVersion: margay.io/v1\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 192.0.2.1\n  asNumber: 65100\n  bfd: {enabled: true, minTx: 100ms, minRx: 0.1s, multiplier: 3}\n---\n\
         apiVersion: margay.io/v1\nkind: BGPPeer\nmetadata:\n  name: off\nspec:\n  peerIP: 192.0.2.2\n  asNumber: 65100\n  bfd: {enabled: false, minTx: 100ms}\n",
    );
    let c = desired_config(&m, &local("n1")).unwrap();
    let tor = neighbor(&c, "192.0.2.1").unwrap();
    assert!(tor.bfd);
    assert_eq!(
        (tor.bfd_min_tx_ms, tor.bfd_min_rx_ms, tor.bfd_multiplier),
        (Some(100), Some(100), Some(3))
    );
    assert!(
        !neighbor(&c, "192.0.2.2").unwrap().bfd,
        "enabled: false is off"
    );
    let mesh = neighbor(&c, "10.0.0.2").unwrap();
    assert!(mesh.bfd, "BGPConfiguration's bfd is the mesh's");
    let t = mesh.bfd_timers().unwrap();
    assert_eq!(t.desired_min_tx, std::time::Duration::from_millis(200));
    assert_eq!(
        t.required_min_rx,
        std::time::Duration::from_millis(300),
        "default"
    );
    assert_eq!(t.detect_mult, 5);
}

#[test]
fn bfd_is_refused_under_calicos_api_group() {
    let yaml = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 192.0.2.1\n  asNumber: 65100\n  bfd: {enabled: true}\n";
    let e = parse_documents(yaml).unwrap_err().to_string();
    assert!(e.contains("spec.bfd") && e.contains("margay.io/v1"), "{e}");
    let bad = "apiVersion: margay.io/v1\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 192.0.2.1\n  asNumber: 65100\n  bfd: {enabled: true, minTx: 1ms, multiplier: 0}\n";
    let e = parse_documents(bad).unwrap_err().to_string();
    assert!(
        e.contains("spec.bfd.minTx") && e.contains("spec.bfd.multiplier"),
        "{e}"
    );
}

/// Five nodes in two racks, the mesh off, and BGPPeers with `peerSelector`, two of them with a
/// selector that does not parse (validation refuses it in a manifest; another writer to the
/// datastore may not).
fn racks() -> Model {
    let rack = |r: &str| format!("  labels:\n    rack: {r}\n");
    let yaml = node("n1", "10.0.0.1", &rack("a"))
        + &node("n2", "10.0.0.2", &rack("a"))
        + &node("n3", "10.0.0.3", &rack("b"))
        + &node(
            "n4",
            "10.0.0.4",
            "  labels:\n    rack: b\n    edge: 'yes'\n",
        )
        + &node("n5", "10.0.0.5", "")
        + "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  nodeToNodeMeshEnabled: false\n---\n\
           apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: a-to-b\nspec:\n  nodeSelector: rack == 'a'\n  peerSelector: rack == 'b'\n---\n\
           apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: edge-to-all\nspec:\n  nodeSelector: has(edge)\n  peerSelector: all()\n---\n\
           apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: broken-node\nspec:\n  nodeSelector: all()\n  peerSelector: all()\n---\n\
           apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: broken-peer\nspec:\n  nodeSelector: all()\n  peerSelector: all()\n";
    let mut m = model(&yaml);
    m.peers.get_mut("broken-node").unwrap().spec.node_selector = Some("rack ==".into());
    m.peers.get_mut("broken-peer").unwrap().spec.peer_selector = Some("has(rack".into());
    m
}

#[test]
fn peer_selector_pairs_reach_both_ends_and_a_broken_selector_selects_nothing() {
    let m = racks();
    for (me, want) in [
        ("n1", &["10.0.0.3", "10.0.0.4"][..]),
        ("n2", &["10.0.0.3", "10.0.0.4"]),
        ("n3", &["10.0.0.1", "10.0.0.2", "10.0.0.4"]),
        ("n4", &["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.5"]),
        ("n5", &["10.0.0.4"]),
    ] {
        let c = desired_config(&m, &local(me)).unwrap();
        assert_eq!(addresses(&c), want, "{me}");
        assert!(
            c.neighbors
                .iter()
                .all(|n| n.peer_type == Some(PeerType::NodeSpecific)),
            "{me}"
        );
    }
    // n4 and n1 are paired by both BGPPeers: one session, from the first by name.
    let c4 = desired_config(&m, &local("n4")).unwrap();
    assert_eq!(
        neighbor(&c4, "10.0.0.1").unwrap().description.as_deref(),
        Some("a-to-b: n1")
    );
    assert_eq!(
        neighbor(&c4, "10.0.0.5").unwrap().description.as_deref(),
        Some("edge-to-all: n5")
    );
}

#[test]
fn a_selector_that_does_not_parse_is_one_note_per_bgppeer_not_one_per_node() {
    let p = plan(&racks(), &local("n1")).unwrap();
    let broken: Vec<&String> = p
        .notes
        .iter()
        .filter(|n| n.contains("selects no node"))
        .collect();
    assert_eq!(broken.len(), 2, "{:?}", p.notes);
    assert!(
        broken[0].starts_with("BGPPeer broken-node: nodeSelector:"),
        "{}",
        broken[0]
    );
    assert!(
        broken[1].starts_with("BGPPeer broken-peer: peerSelector:"),
        "{}",
        broken[1]
    );
}

/// Issue 12: a reflector with 999 clients, paired by one peerSelector BGPPeer, as the scale
/// benchmark runs it. What the plan costs is measured there (`bench/scale.sh`), not here.
#[test]
fn a_reflector_with_999_clients_pairs_each_client_with_it_alone() {
    let mut yaml = String::new();
    for i in 0..1000 {
        let name = format!("n{i:04}");
        let ip = format!("10.{}.{}.1", i / 250, i % 250);
        yaml += &if i == 0 {
            node(&name, &ip, "  labels:\n    route-reflector: 'true'\n").replace(
                "  bgp:\n",
                "  bgp:\n    routeReflectorClusterID: 244.0.0.1\n",
            )
        } else {
            node(&name, &ip, "")
        };
    }
    yaml += "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  nodeToNodeMeshEnabled: false\n---\n\
             apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: peer-with-rrs\nspec:\n  nodeSelector: all()\n  peerSelector: route-reflector == 'true'\n";
    let m = model(&yaml);
    let c = desired_config(&m, &local("n0000")).unwrap();
    assert_eq!(c.neighbors.len(), 999);
    assert!(c.neighbors.iter().all(|n| n.route_reflector_client));
    assert_eq!(
        addresses(&desired_config(&m, &local("n0500")).unwrap()),
        ["10.0.0.1"],
        "a client peers with the reflector only"
    );
}

#[test]
fn margay_max_paths_reaches_the_speaker_with_two_by_default() {
    let c = desired_config(&with(""), &local("n1")).unwrap();
    assert_eq!(
        *c.max_paths.get_ref(),
        2,
        "the default: one path per ToR of two"
    );
    let m = with(
        "apiVersion: margay.io/v1\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  maxPaths: 4\n",
    );
    let c = desired_config(&m, &local("n1")).unwrap();
    assert_eq!(*c.max_paths.get_ref(), 4);
}
