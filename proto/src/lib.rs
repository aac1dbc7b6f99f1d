//! margay's gRPC contracts: the generated code for each `.proto` under `margay/`, nothing else.

/// `margay.bgp.v1`: bgpd's service for felix (routes in and out) and margayctl (peers, RIB).
pub mod bgp {
    pub mod v1 {
        tonic::include_proto!("margay.bgp.v1");
    }
}

/// `margay.felix.v1`: felix's endpoint service for the CNI plugin (add, delete, check, GC, status).
pub mod felix {
    pub mod v1 {
        tonic::include_proto!("margay.felix.v1");
    }
}
