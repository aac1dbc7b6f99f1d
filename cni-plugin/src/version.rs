//! CNI specification versions: which ones margay speaks and what each one allows.

use crate::error::{CniError, code};

/// A CNI specification version margay answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SpecVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

/// Every version margay supports, oldest first (VERSION's `supportedVersions`).
pub const SUPPORTED: [SpecVersion; 5] = [
    SpecVersion::V0_3_0,
    SpecVersion::V0_3_1,
    SpecVersion::V0_4_0,
    SpecVersion::V1_0_0,
    SpecVersion::V1_1_0,
];

/// The version margay answers in when the request names none it can use (VERSION, early errors).
pub const NEWEST: SpecVersion = SpecVersion::V1_1_0;

impl SpecVersion {
    pub fn parse(s: &str) -> Result<Self, CniError> {
        SUPPORTED
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                CniError::new(
                    code::INCOMPATIBLE_VERSION,
                    format!(
                        "incompatible CNI version {s:?}: margay supports {}",
                        supported_list().join(", ")
                    ),
                )
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SpecVersion::V0_3_0 => "0.3.0",
            SpecVersion::V0_3_1 => "0.3.1",
            SpecVersion::V0_4_0 => "0.4.0",
            SpecVersion::V1_0_0 => "1.0.0",
            SpecVersion::V1_1_0 => "1.1.0",
        }
    }

    /// CHECK exists from 0.4.0.
    pub fn has_check(self) -> bool {
        self >= SpecVersion::V0_4_0
    }

    /// GC and STATUS exist from 1.1.0.
    pub fn has_gc_and_status(self) -> bool {
        self >= SpecVersion::V1_1_0
    }

    /// Results before 1.0.0 carry `ips[].version` ("4" or "6").
    pub fn ips_carry_version(self) -> bool {
        self < SpecVersion::V1_0_0
    }

    /// Interfaces report their MTU from 1.1.0.
    pub fn interfaces_carry_mtu(self) -> bool {
        self >= SpecVersion::V1_1_0
    }
}

pub fn supported_list() -> Vec<&'static str> {
    SUPPORTED.iter().map(|v| v.as_str()).collect()
}

/// The VERSION command's answer.
pub fn version_json(answer_in: &str) -> String {
    serde_json::json!({
        "cniVersion": answer_in,
        "supportedVersions": supported_list(),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_supported_version_and_rejects_others_with_code_1() {
        for v in SUPPORTED {
            assert_eq!(SpecVersion::parse(v.as_str()), Ok(v));
        }
        for bad in ["0.2.0", "0.1.0", "2.0.0", "1.0", "", "latest"] {
            let e = SpecVersion::parse(bad).unwrap_err();
            assert_eq!(e.code, code::INCOMPATIBLE_VERSION, "{bad}");
            assert!(e.msg.contains("1.1.0"), "{}", e.msg);
        }
    }

    #[test]
    fn check_needs_0_4_0_and_gc_status_need_1_1_0() {
        assert!(!SpecVersion::V0_3_1.has_check());
        assert!(SpecVersion::V0_4_0.has_check());
        assert!(!SpecVersion::V1_0_0.has_gc_and_status());
        assert!(SpecVersion::V1_1_0.has_gc_and_status());
    }

    #[test]
    fn only_pre_1_0_results_carry_ip_version() {
        assert!(SpecVersion::V0_4_0.ips_carry_version());
        assert!(SpecVersion::V0_3_0.ips_carry_version());
        assert!(!SpecVersion::V1_0_0.ips_carry_version());
    }

    #[test]
    fn version_answer_lists_all_supported() {
        let v: serde_json::Value = serde_json::from_str(&version_json("0.4.0")).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(
            v["supportedVersions"],
            serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
    }
}
