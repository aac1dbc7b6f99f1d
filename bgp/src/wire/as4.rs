//! Rebuilding the 4-octet AS model from a 2-octet AS peer's AS_PATH / AGGREGATOR and the
//! AS4_PATH / AS4_AGGREGATOR that came with them (RFC 6793 §4.2.3).

use super::attr_codec::As4Attrs;
use super::attrs::{AsPath, AsSegment, PathAttributes};
use super::message::AS_TRANS;

/// Merges AS4_PATH and AS4_AGGREGATOR into `attrs`; reasons for anything ignored go to
/// `discarded`.
pub fn merge_as4(attrs: &mut PathAttributes, as4: As4Attrs, discarded: &mut Vec<String>) {
    // An AGGREGATOR that names a real 2-octet AS means the AS4 attributes came from an older
    // aggregation: ignore both.
    if let Some(agg) = attrs.aggregator
        && agg.asn != AS_TRANS as u32
    {
        if as4.as4_path.is_some() || as4.as4_aggregator.is_some() {
            discarded.push("AS4_PATH/AS4_AGGREGATOR: AGGREGATOR is not AS_TRANS".into());
        }
        return;
    }
    if let Some(agg4) = as4.as4_aggregator {
        attrs.aggregator = Some(agg4);
    }
    let Some(as4_path) = as4.as4_path else {
        return;
    };
    let have = attrs.as_path.len();
    let want = as4_path.len();
    if have < want {
        discarded.push("AS4_PATH: longer than AS_PATH".into());
        return;
    }
    attrs.as_path = merged(&attrs.as_path, as4_path, have - want);
}

/// The leading `keep` ASes of `path` (counted as the decision process counts them, so
/// confederation segments ride along for free), followed by `as4_path`.
fn merged(path: &AsPath, as4_path: AsPath, mut keep: usize) -> AsPath {
    let mut segments = Vec::with_capacity(path.segments.len() + as4_path.segments.len());
    for seg in &path.segments {
        if keep == 0 {
            break;
        }
        match seg {
            AsSegment::Sequence(v) => {
                let n = keep.min(v.len());
                segments.push(AsSegment::Sequence(v[..n].to_vec()));
                keep -= n;
            }
            AsSegment::Set(_) => {
                segments.push(seg.clone());
                keep -= 1;
            }
            AsSegment::ConfedSequence(_) | AsSegment::ConfedSet(_) => segments.push(seg.clone()),
        }
    }
    for (i, seg) in as4_path.segments.into_iter().enumerate() {
        // Join the kept sequence and the AS4_PATH's first sequence into one segment.
        if i == 0
            && let (Some(AsSegment::Sequence(last)), AsSegment::Sequence(first)) =
                (segments.last_mut(), &seg)
            && last.len() + first.len() <= 255
        {
            last.extend_from_slice(first);
            continue;
        }
        segments.push(seg);
    }
    AsPath { segments }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::attrs::Aggregator;
    use std::net::Ipv4Addr;

    fn seq(v: &[u32]) -> AsPath {
        AsPath {
            segments: vec![AsSegment::Sequence(v.to_vec())],
        }
    }

    #[test]
    fn replaces_as_trans_with_real_asns_from_as4_path() {
        let mut attrs = PathAttributes {
            as_path: seq(&[65001, 64512, 23456]),
            ..Default::default()
        };
        let as4 = As4Attrs {
            as4_path: Some(seq(&[64512, 4_200_000_005])),
            as4_aggregator: None,
        };
        let mut discarded = Vec::new();
        merge_as4(&mut attrs, as4, &mut discarded);
        assert_eq!(attrs.as_path, seq(&[65001, 64512, 4_200_000_005]));
        assert!(discarded.is_empty());
    }

    #[test]
    fn ignores_as4_path_longer_than_as_path() {
        let mut attrs = PathAttributes {
            as_path: seq(&[23456]),
            ..Default::default()
        };
        let as4 = As4Attrs {
            as4_path: Some(seq(&[1, 4_200_000_005])),
            as4_aggregator: None,
        };
        let mut discarded = Vec::new();
        merge_as4(&mut attrs, as4, &mut discarded);
        assert_eq!(attrs.as_path, seq(&[23456]));
        assert_eq!(discarded.len(), 1);
    }

    #[test]
    fn ignores_as4_attributes_when_aggregator_is_not_as_trans() {
        let agg = Aggregator {
            asn: 65001,
            address: Ipv4Addr::new(10, 0, 0, 1),
        };
        let mut attrs = PathAttributes {
            as_path: seq(&[23456]),
            aggregator: Some(agg),
            ..Default::default()
        };
        let as4 = As4Attrs {
            as4_path: Some(seq(&[4_200_000_005])),
            as4_aggregator: Some(Aggregator {
                asn: 4_200_000_005,
                address: Ipv4Addr::new(10, 0, 0, 1),
            }),
        };
        let mut discarded = Vec::new();
        merge_as4(&mut attrs, as4, &mut discarded);
        assert_eq!(attrs.aggregator, Some(agg));
        assert_eq!(attrs.as_path, seq(&[23456]));
    }

    #[test]
    fn takes_as4_aggregator_when_aggregator_is_as_trans() {
        let real = Aggregator {
            asn: 4_200_000_005,
            address: Ipv4Addr::new(10, 0, 0, 1),
        };
        let mut attrs = PathAttributes {
            aggregator: Some(Aggregator {
                asn: 23456,
                address: real.address,
            }),
            ..Default::default()
        };
        let as4 = As4Attrs {
            as4_path: None,
            as4_aggregator: Some(real),
        };
        merge_as4(&mut attrs, as4, &mut Vec::new());
        assert_eq!(attrs.aggregator, Some(real));
    }
}
