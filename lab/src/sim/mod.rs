//! Simulated nodes, shared by `margay-lab up --simulated` and the scale benchmarks
//! (`margay-bench`): a real Node resource and IPAM block in etcd for each ([`register`]), a
//! light iBGP speaker for each on its own address, many in one process ([`speaker`], on the
//! small BGP code of [`wire`], not margay's), a runtime inside a namespace ([`nsrt`]), and the
//! lab's fleet of them ([`fleet`]).

pub mod fleet;
pub mod nsrt;
pub mod register;
pub mod speaker;
pub mod wire;
