//! IPAM placeholder
pub mod records;
