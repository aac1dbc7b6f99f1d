//! Policy routing rules (`ip rule`): what felix reads ([`Rule`]) and the RTM_NEWRULE /
//! RTM_DELRULE messages for the one kind of rule it writes, "packets without this firewall mark
//! look up this table" (WireGuard's rule).

use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleHeader, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

/// One routing rule, reduced to the fields felix sets and compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rule {
    /// IPv6 rather than IPv4.
    pub v6: bool,
    pub priority: u32,
    /// The table looked up (FR_ACT_TO_TBL); 0 for any other action.
    pub table: u32,
    /// `fwmark MARK/MASK`, if the rule matches on the mark.
    pub fwmark: Option<(u32, u32)>,
    /// `not`: the match is inverted.
    pub invert: bool,
}

impl Rule {
    fn message(&self) -> RuleMessage {
        let mut msg = RuleMessage::default();
        msg.header = RuleHeader {
            family: if self.v6 {
                AddressFamily::Inet6
            } else {
                AddressFamily::Inet
            },
            table: u8::try_from(self.table).unwrap_or(0),
            action: RuleAction::ToTable,
            flags: if self.invert {
                RuleFlags::Invert
            } else {
                RuleFlags::empty()
            },
            ..RuleHeader::default()
        };
        msg.attributes.push(RuleAttribute::Priority(self.priority));
        if let Some((mark, mask)) = self.fwmark {
            msg.attributes.push(RuleAttribute::FwMark(mark));
            msg.attributes.push(RuleAttribute::FwMask(mask));
        }
        msg.attributes.push(RuleAttribute::Table(self.table));
        msg
    }

    pub(crate) fn to_new_message(self) -> RouteNetlinkMessage {
        RouteNetlinkMessage::NewRule(self.message())
    }

    pub(crate) fn to_del_message(self) -> RouteNetlinkMessage {
        RouteNetlinkMessage::DelRule(self.message())
    }

    /// Reads a rule from an RTM_NEWRULE message.
    pub(crate) fn from_message(msg: &RuleMessage) -> Option<Rule> {
        let v6 = match msg.header.family {
            AddressFamily::Inet => false,
            AddressFamily::Inet6 => true,
            _ => return None,
        };
        let mut priority = 0;
        let mut table = u32::from(msg.header.table);
        let mut mark = None;
        let mut mask = None;
        for a in &msg.attributes {
            match a {
                RuleAttribute::Priority(p) => priority = *p,
                RuleAttribute::Table(t) => table = *t,
                RuleAttribute::FwMark(m) => mark = Some(*m),
                RuleAttribute::FwMask(m) => mask = Some(*m),
                _ => {}
            }
        }
        if msg.header.action != RuleAction::ToTable {
            table = 0;
        }
        Some(Rule {
            v6,
            priority,
            table,
            fwmark: mark.map(|m| (m, mask.unwrap_or(u32::MAX))),
            invert: msg.header.flags.contains(RuleFlags::Invert),
        })
    }
}

/// The RTM_GETRULE dump request for one family.
pub(crate) fn dump_request(v6: bool) -> RouteNetlinkMessage {
    let mut msg = RuleMessage::default();
    msg.header.family = if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    RouteNetlinkMessage::GetRule(msg)
}
