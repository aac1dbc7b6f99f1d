//! margay's benchmark drivers as a library, deliberately independent of margay's BGP code so
//! the measuring tools do not share bugs with what they measure: [`bgp`], a minimal BGP-4 (the
//! reflector throughput injector and sinks), and [`sim`], simulated nodes for the scale
//! benchmarks (`margay-scale`) and the N = 100 scale test.

pub mod bgp;
pub mod sim;
