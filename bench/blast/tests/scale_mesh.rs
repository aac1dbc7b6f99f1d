//! The scale harness at a reduced size (N = 100: one real node, 99 simulated ones in a full
//! mesh, real etcd, real kernel): asserts the functional facts, never timing. Every simulated
//! node's block is in the real node's kernel via that node's address, every simulated speaker
//! has exactly one session, never reset, and holds the real node's block; a node joins and
//! leaves without resetting anyone; margay-bgpd stops on SIGTERM with 99 peers Established.
//! The same with the real node as the route reflector of the 99: every client holds every
//! other client's block and the reflector's own, also while the speaker's outbox is over its
//! limit (a small one here) and the speaker waits for clients to catch up.
//! Needs root (namespaces) and the margay binaries built (`cargo test --workspace
//! --all-targets` builds them).

use std::time::Duration;

use margay_bench::sim::{Role, SimCluster, coldstart, joinleave, real_block};

const SIMULATED: usize = 99;
/// Generous bounds for a loaded CI machine: a failure here is a hang, not a slow run.
const TIMEOUT: Duration = Duration::from_secs(180);
const STOP_LIMIT: Duration = Duration::from_secs(20);

#[test]
fn a_real_node_meshes_with_99_simulated_nodes_sees_joins_and_leaves_and_stops() {
    let c = SimCluster::build(SIMULATED, 1, Role::Mesh, |s| eprintln!("scale_mesh: {s}"))
        .expect("building the simulated cluster");
    let (cold, margay) = coldstart::margay(&c, TIMEOUT).expect("margay converging");
    assert_eq!(cold.downs, 0, "a session went down during the cold start");

    let routes = c
        .kernel_routes("81")
        .expect("reading the real node's routes");
    for (node, log) in c.nodes().iter().zip(c.logs().iter()) {
        assert_eq!(
            routes.get(&node.block),
            Some(&node.addr),
            "the real node's kernel must route {} via {}",
            node.block,
            node.addr
        );
        let log = log.lock().unwrap();
        assert_eq!(
            (log.sessions, log.up, log.downs),
            (1, 1, 0),
            "{}: one session, up, never reset",
            node.name
        );
        assert!(
            log.routes.contains_key(&real_block()),
            "{} must hold the real node's block {}",
            node.name,
            real_block()
        );
    }
    assert_eq!(
        routes.len(),
        SIMULATED,
        "no other route in the pool: {routes:?}"
    );

    let trials = joinleave::margay(&c, 3, |_| {}).expect("a node joining and leaving");
    assert_eq!(trials.joins.len(), 3);
    assert_eq!(trials.downs, 0, "a join or leave reset another session");

    let stopped = coldstart::stop_margay(&c, margay, STOP_LIMIT).expect("stopping margay");
    assert!(
        stopped.is_some(),
        "margay-bgpd did not stop within {STOP_LIMIT:?} of SIGTERM with {SIMULATED} peers"
    );
}

/// An outbox limit the reflector's cold start at N = 100 passes many times over (99 initial
/// tables and 99 reflected blocks, each owed to 98 clients), so the speaker stops reading its
/// sessions again and again while clients catch up, as a 1,000-client reflector does at the
/// default 8 MiB. Before the session kept writing what it was owed while waiting to hand the
/// speaker an event, that stalled the cold start for good (issue 12).
const SMALL_OUTBOX: usize = 16 << 10;

#[test]
fn a_real_reflector_passes_every_block_of_99_simulated_clients_to_all_of_them() {
    let c = SimCluster::build(SIMULATED, 1, Role::Reflector, |s| {
        eprintln!("scale_mesh reflector: {s}")
    })
    .expect("building the simulated cluster");
    // Worker threads, as the stalled 1,000-client run had them: sessions then race the speaker.
    let (cold, margay) = coldstart::margay_with(&c, TIMEOUT, |mut a| {
        a.worker_threads = Some(0);
        a.outbox_limit = Some(SMALL_OUTBOX);
        a
    })
    .expect("margay converging with a small outbox limit");
    assert_eq!(cold.downs, 0, "a session went down during the cold start");
    let routes = c
        .kernel_routes("81")
        .expect("reading the reflector's routes");
    assert_eq!(
        routes.len(),
        SIMULATED,
        "the reflector's kernel: {routes:?}"
    );
    for (node, log) in c.nodes().iter().zip(c.logs().iter()) {
        let log = log.lock().unwrap();
        assert_eq!((log.sessions, log.downs), (1, 0), "{}", node.name);
        for other in c.nodes().iter().filter(|o| o.name != node.name) {
            assert!(
                log.routes.contains_key(&other.block),
                "{} must hold {}'s block {} through the reflector",
                node.name,
                other.name,
                other.block
            );
        }
        assert!(log.routes.contains_key(&real_block()), "{}", node.name);
    }
    // A join counts only once every client holds the new block, a leave once none does.
    let trials = joinleave::margay(&c, 3, |_| {}).expect("a client joining and leaving");
    assert_eq!(trials.downs, 0, "a join or leave reset another session");
    let stopped = coldstart::stop_margay(&c, margay, STOP_LIMIT).expect("stopping margay");
    assert!(stopped.is_some(), "margay-bgpd did not stop on SIGTERM");
}
