//! Reading resource files: multi-document YAML, JSON (one object, a stream of objects, or a
//! `List` with `items`), each document checked field by field.

use super::{AnyResource, ModelError};
use serde::Deserialize;

/// Parses every resource in `text` and validates each one. Empty YAML documents are skipped.
pub fn parse_documents(text: &str) -> Result<Vec<AnyResource>, ModelError> {
    parse(text, None)
}

/// [`parse_documents`], giving namespaced resources that name no namespace `namespace`
/// (calicoctl's `-n`, `default` when not given) before they are validated.
pub fn parse_documents_in(text: &str, namespace: &str) -> Result<Vec<AnyResource>, ModelError> {
    parse(text, Some(namespace))
}

fn parse(text: &str, namespace: Option<&str>) -> Result<Vec<AnyResource>, ModelError> {
    let values = split_documents(text)?;
    let mut out = Vec::new();
    for (i, v) in values.into_iter().enumerate() {
        let index = i + 1;
        for item in flatten_list(v) {
            let kind = item
                .get("kind")
                .and_then(|k| k.as_str())
                .map(str::to_string);
            let name = item
                .pointer("/metadata/name")
                .and_then(|k| k.as_str())
                .map(str::to_string);
            let mut r = AnyResource::from_value(item).map_err(|message| ModelError::Parse {
                index,
                kind: kind.clone(),
                name: name.clone(),
                message,
            })?;
            if let Some(ns) = namespace
                && r.info().namespaced
                && r.metadata().namespace.as_deref().is_none_or(str::is_empty)
            {
                r.metadata_mut().namespace = Some(ns.to_string());
            }
            r.validate()?;
            out.push(r);
        }
    }
    Ok(out)
}

fn parse_err(index: usize, message: impl ToString) -> ModelError {
    ModelError::Parse {
        index,
        kind: None,
        name: None,
        message: message.to_string(),
    }
}

fn split_documents(text: &str) -> Result<Vec<serde_json::Value>, ModelError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let mut out = Vec::new();
        for (i, v) in serde_json::Deserializer::from_str(text)
            .into_iter::<serde_json::Value>()
            .enumerate()
        {
            let v = v.map_err(|e| parse_err(i + 1, e))?;
            match v {
                serde_json::Value::Array(items) => out.extend(items),
                v => out.push(v),
            }
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let v = serde_json::Value::deserialize(doc).map_err(|e| parse_err(i + 1, e))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// A `kind: List` (or `IPPoolList`, ...) becomes its items.
fn flatten_list(v: serde_json::Value) -> Vec<serde_json::Value> {
    let is_list = v
        .get("kind")
        .and_then(|k| k.as_str())
        .is_some_and(|k| k.ends_with("List"));
    match (is_list, v) {
        (true, serde_json::Value::Object(mut m)) => match m.remove("items") {
            Some(serde_json::Value::Array(items)) => items,
            _ => Vec::new(),
        },
        (_, v) => vec![v],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::*;

    #[test]
    fn multi_document_yaml_of_calico_shapes_parses() {
        let text = r#"
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: tor1
spec:
  peerIP: 10.0.0.1:1790
  asNumber: 65001
  password:
    secretKeyRef:
      name: bgp-secrets
      key: tor1
---
apiVersion: margay.io/v1
kind: IPPool
metadata:
  name: pool4
spec:
  cidr: 10.244.0.0/16
  ipipMode: CrossSubnet
  natOutgoing: true
---
"#;
        let rs = parse_documents(text).unwrap();
        assert_eq!(rs.len(), 2);
        let AnyResource::BgpPeer(p) = &rs[0] else {
            panic!("not a peer: {:?}", rs[0])
        };
        assert_eq!(
            p.spec.peer_addr(),
            Some(("10.0.0.1".parse().unwrap(), Some(1790)))
        );
        assert_eq!(p.spec.as_number, Some(AsNumber(65001)));
        let AnyResource::IpPool(pool) = &rs[1] else {
            panic!("not a pool")
        };
        assert_eq!(pool.spec.block_size, Some(26), "default block size");
        assert_eq!(pool.spec.ipip_mode, Some(EncapMode::CrossSubnet));
        assert_eq!(pool.spec.vxlan_mode, Some(EncapMode::Never));
        assert_eq!(pool.spec.node_selector.as_deref(), Some("all()"));
    }

    #[test]
    fn ipv6_pool_defaults_to_block_size_122() {
        let rs = parse_documents(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p6}\nspec: {cidr: 'fd00:10::/64'}\n",
        )
        .unwrap();
        let AnyResource::IpPool(p) = &rs[0] else {
            panic!()
        };
        assert_eq!(p.spec.block_size, Some(122));
    }

    #[test]
    fn json_list_and_json_stream_parse() {
        let list = r#"{"apiVersion":"v1","kind":"List","items":[
            {"apiVersion":"projectcalico.org/v3","kind":"Node","metadata":{"name":"n1","labels":{"rack":"a"}},
             "spec":{"bgp":{"ipv4Address":"10.0.0.1/24","asNumber":"65000","routeReflectorClusterID":"1.1.1.1"}}},
            {"apiVersion":"projectcalico.org/v3","kind":"BGPConfiguration","metadata":{"name":"default"},
             "spec":{"nodeToNodeMeshEnabled":false,"asNumber":64513,"serviceClusterIPs":[{"cidr":"10.96.0.0/12"}]}}
        ]}"#;
        let rs = parse_documents(list).unwrap();
        assert_eq!(rs.len(), 2);
        let AnyResource::Node(n) = &rs[0] else {
            panic!()
        };
        let bgp = n.spec.bgp.as_ref().unwrap();
        assert_eq!(bgp.ipv4(), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(bgp.as_number, Some(AsNumber(65000)));
        let AnyResource::BgpConfiguration(c) = &rs[1] else {
            panic!()
        };
        assert!(!c.spec.mesh_enabled());
        assert_eq!(c.spec.listen_port(), 179);

        let stream = r#"{"apiVersion":"projectcalico.org/v3","kind":"Node","metadata":{"name":"a"}}
                        {"apiVersion":"projectcalico.org/v3","kind":"Node","metadata":{"name":"b"}}"#;
        assert_eq!(parse_documents(stream).unwrap().len(), 2);
    }

    #[test]
    fn bgp_configuration_defaults_are_calicos() {
        let c = BgpConfigurationSpec::default();
        assert!(c.mesh_enabled());
        assert_eq!(c.as_number(), AsNumber(64512));
        assert_eq!(c.listen_port(), 179);
        assert_eq!(c.log_severity(), "Info");
    }

    #[test]
    fn bad_peer_ip_is_reported_with_resource_and_field() {
        let e = parse_documents(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor1}\nspec: {peerIP: 10.0.0.300, asNumber: 65001}\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "BGPPeer 'tor1': spec.peerIP: '10.0.0.300' is not an IP address"
        );
    }

    #[test]
    fn unknown_field_of_strict_kind_is_rejected_with_its_path() {
        let e = parse_documents(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor1}\nspec: {peerIp: 10.0.0.3, asNumber: 65001}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("BGPPeer 'tor1'"), "{e}");
        assert!(e.contains("spec.peerIp: unknown field `peerIp`"), "{e}");
    }

    #[test]
    fn felix_configuration_keeps_unknown_fields() {
        let rs = parse_documents(
            "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {bpfEnabled: false, vxlanVNI: 4096}\n",
        )
        .unwrap();
        let AnyResource::FelixConfiguration(f) = &rs[0] else {
            panic!()
        };
        assert_eq!(f.spec.vxlan_vni, Some(4096));
        assert_eq!(
            f.spec.other.get("bpfEnabled"),
            Some(&serde_json::json!(false))
        );
        assert!(rs[0].to_value().pointer("/spec/bpfEnabled").is_some());
    }

    #[test]
    fn bad_enum_value_and_bad_selector_name_their_fields() {
        let e = parse_documents(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/16, ipipMode: Sometimes}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("spec.ipipMode: unknown variant `Sometimes`"),
            "{e}"
        );
        let e = parse_documents(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: rr}\nspec: {peerSelector: \"has(rr\", nodeSelector: all()}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("BGPPeer 'rr': spec.peerSelector: 'has(rr' is not a valid selector"),
            "{e}"
        );
    }

    #[test]
    fn pool_with_block_larger_than_pool_and_both_encaps_is_invalid() {
        let e = parse_documents(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/28, blockSize: 26, ipipMode: Always, vxlanMode: Always}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("spec.blockSize: 26 is larger than the pool"),
            "{e}"
        );
        assert!(
            e.contains("spec.vxlanMode: cannot be enabled together"),
            "{e}"
        );
    }

    #[test]
    fn unsupported_api_version_and_bad_name_are_rejected() {
        let e = parse_documents("apiVersion: v1\nkind: Node\nmetadata: {name: Node_1}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("apiVersion: 'v1' is not supported"), "{e}");
        assert!(
            e.contains("metadata.name: 'Node_1' is not a valid name"),
            "{e}"
        );
    }

    #[test]
    fn inline_password_is_redacted() {
        let rs = parse_documents(
            "apiVersion: margay.io/v1\nkind: BGPPeer\nmetadata: {name: tor1}\nspec: {peerIP: 'fd00::1', asNumber: '1.10', password: {value: s3cret}}\n",
        )
        .unwrap();
        let text = serde_json::to_string(&rs[0].redacted().to_value()).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("<redacted>"));
        let AnyResource::BgpPeer(p) = &rs[0] else {
            panic!()
        };
        assert_eq!(p.spec.as_number, Some(AsNumber(65546)), "asdot 1.10");
    }

    #[test]
    fn ippool_written_by_current_calico_parses() {
        let rs = parse_documents(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: lb}\nspec: {cidr: 203.0.113.0/24, allowedUses: [LoadBalancer], assignmentMode: Manual}\n---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/16, assignmentMode: Automatic, allowedUses: [Workload, Tunnel]}\n",
        )
        .unwrap();
        let AnyResource::IpPool(lb) = &rs[0] else {
            panic!()
        };
        assert_eq!(lb.spec.assignment(), AssignmentMode::Manual);
        assert!(lb.spec.allows(AllowedUse::LoadBalancer));
        assert!(!lb.spec.allows(AllowedUse::Workload));
        let e = parse_documents(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/16, allowedUses: [Workload, LoadBalancer], assignmentMode: Sometimes}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("spec.assignmentMode: unknown variant `Sometimes`"),
            "{e}"
        );
        let e = parse_documents(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/16, allowedUses: [Workload, LoadBalancer]}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("spec.allowedUses: LoadBalancer cannot be combined"),
            "{e}"
        );
    }

    #[test]
    fn communities_are_checked_as_calico_does() {
        let doc = |spec: &str| {
            format!(
                "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {{name: default}}\nspec: {spec}\n"
            )
        };
        let e = parse_documents(&doc(
            "{communities: [{name: a, value: '65536:1'}, {name: a, value: '1:2:3'}], prefixAdvertisements: [{cidr: 10.0.0.0/8, communities: [b, '1:x']}]}",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("spec.communities[0].value: '65536:1': each part of a standard community (aa:nn) is a 16-bit number"), "{e}");
        assert!(
            e.contains("spec.communities[1].name: 'a' is defined twice"),
            "{e}"
        );
        assert!(
            e.contains("spec.prefixAdvertisements[0].communities[0]: 'b' is neither a name"),
            "{e}"
        );
        assert!(
            e.contains("spec.prefixAdvertisements[0].communities[1]: '1:x' is neither"),
            "{e}"
        );
        let e = parse_documents(&doc("{communities: [{name: a, value: '1:2'}]}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.communities: defined but not used"), "{e}");
        let e = parse_documents(&doc(
            "{prefixAdvertisements: [{cidr: 10.0.0.0/33, communities: ['1:2']}]}",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("spec.prefixAdvertisements[0].cidr: '10.0.0.0/33' is not a CIDR"),
            "{e}"
        );
        let rs = parse_documents(&doc(
            "{communities: [{name: a, value: '65000:1'}], prefixAdvertisements: [{cidr: 'fd00::/48', communities: [a, '1:2:3']}]}",
        ))
        .unwrap();
        let AnyResource::BgpConfiguration(c) = &rs[0] else {
            panic!()
        };
        assert_eq!(
            c.spec.prefix_communities(),
            vec![(
                "fd00::/48".parse().unwrap(),
                vec![
                    CommunityValue::Standard(65000, 1),
                    CommunityValue::Large(1, 2, 3)
                ]
            )]
        );
    }

    #[test]
    fn newer_bgp_peer_fields_are_accepted_and_checked() {
        let doc = |spec: &str| {
            format!(
                "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{name: p}}\nspec: {spec}\n"
            )
        };
        parse_documents(&doc(
            "{peerIP: 10.0.0.1, asNumber: 65001, localASNumber: 65010, keepaliveTime: 10s, nextHopMode: Keep, reversePeering: Auto, reachableBy: 10.0.0.254, ttlSecurity: 2, password: {secretKeyRef: {name: s, key: k, optional: true}}}",
        ))
        .unwrap();
        let e = parse_documents(&doc(
            "{peerIP: 10.0.0.1, asNumber: 65001, keepOriginalNextHop: true, nextHopMode: Self, reachableBy: 'fd00::1', keepaliveTime: soon}",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("spec.nextHopMode: cannot be set together with spec.keepOriginalNextHop"),
            "{e}"
        );
        assert!(
            e.contains("spec.reachableBy: 'fd00::1' is not of spec.peerIP's address family"),
            "{e}"
        );
        assert!(
            e.contains("spec.keepaliveTime: 'soon' is not a duration"),
            "{e}"
        );
    }
}
