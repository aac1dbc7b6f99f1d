//! CNI errors: the spec's well-known codes, margay's own (100+), and the error JSON on stdout.

use serde::Serialize;

/// The CNI error codes the plugin returns.
///
/// 0-99 are the spec's; 100 and up are margay's own, each documented in the crate README.
pub mod code {
    /// The network configuration's `cniVersion` is not one the plugin supports, or the command
    /// does not exist in that version (CHECK before 0.4.0, GC and STATUS before 1.1.0).
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// A network configuration field whose value margay does not support (e.g. `ipMasq: true`).
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// The container is unknown or its network namespace does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// A required environment variable is missing or invalid (the message names it).
    pub const INVALID_ENVIRONMENT: u32 = 4;
    /// Reading stdin or opening the log file failed.
    pub const IO_FAILURE: u32 = 5;
    /// stdin (or a delegated plugin's output) is not the JSON expected.
    pub const DECODING_FAILURE: u32 = 6;
    /// The network configuration is well-formed JSON but not a valid configuration.
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    /// Transient: felix is unreachable, not synced, or cannot reach etcd.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot serve ADD now.
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: not available, and existing containers may have limited connectivity.
    pub const NOT_AVAILABLE_LIMITED_CONNECTIVITY: u32 = 51;

    /// margay: felix refused the request (gRPC INVALID_ARGUMENT, FAILED_PRECONDITION, ...).
    pub const FELIX_REFUSED: u32 = 100;
    /// margay: no free address in the pools (gRPC RESOURCE_EXHAUSTED).
    pub const NO_FREE_ADDRESS: u32 = 101;
    /// margay: a requested address is already in use (gRPC ALREADY_EXISTS).
    pub const ADDRESS_IN_USE: u32 = 102;
    /// margay: felix failed to program the dataplane (gRPC INTERNAL).
    pub const DATAPLANE_FAILURE: u32 = 103;
    /// margay: CHECK found the endpoint differs from what ADD made (details list each difference).
    pub const ENDPOINT_DIFFERS: u32 = 104;
    /// margay: the delegated IPAM plugin could not be run (not in CNI_PATH, failed without an
    /// error JSON, or its output was not a result).
    pub const IPAM_PLUGIN_FAILED: u32 = 105;
    /// margay: felix's answer could not be rendered as a CNI result (e.g. a malformed address).
    pub const BAD_FELIX_ANSWER: u32 = 106;
}

/// A CNI error: printed as JSON on stdout, with a non-zero exit code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CNI error {code}: {msg}")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The spec's error JSON, in the given CNI version.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        let wire = Wire {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        };
        serde_json::to_string(&wire).unwrap_or_else(|_| {
            format!(
                "{{\"cniVersion\":\"{cni_version}\",\"code\":{},\"msg\":\"\"}}",
                self.code
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_spec_fields_and_omits_empty_details() {
        let e = CniError::new(code::TRY_AGAIN_LATER, "felix unreachable");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("1.0.0")).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["code"], 11);
        assert_eq!(v["msg"], "felix unreachable");
        assert!(v.get("details").is_none());
        let v: serde_json::Value =
            serde_json::from_str(&e.with_details("socket gone").to_json("0.4.0")).unwrap();
        assert_eq!(v["details"], "socket gone");
    }
}
