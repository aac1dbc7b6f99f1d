//! What each peer is owed: one log of outgoing changes shared by all their recipients, and a
//! cursor per peer, encoded only when a session can take more.
//!
//! A change the RIB exports to 999 peers is one entry here, not 999 queued messages: a peer's
//! pending set is the part of the log past its cursor that names it (BIRD keeps a bucket of
//! owed prefixes per channel; sharing the log keeps a peer's cost at one cursor). An entry is
//! encoded the first time any of its recipients reaches it, and the same bytes go to all of
//! them; it is freed once the last has passed it. Order per peer is the order the RIB produced,
//! so what a peer ends up with is exactly what sending at once would have given it.

use crate::rib::{Export, PeerId};
use crate::wire;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};

/// The default log weight (roughly bytes: prefixes still to encode, octets already encoded)
/// above which the speaker stops taking session events until peers catch up: a slow peer then
/// holds its sources back through TCP, as a bounded queue did, instead of growing our memory.
/// `--outbox-limit` sets another. 512 KiB: a 1,000-client reflector's cold start peaked
/// 6-7 MiB higher with 8 MiB of log than with 64 KiB-512 KiB, converged no faster, and a
/// million-route reflection was no slower with it (BENCHMARKS.md).
pub const DEFAULT_LOG_LIMIT: usize = 512 << 10;

/// One outgoing change and who is owed it.
#[derive(Debug)]
struct Entry {
    /// Sorted.
    peers: Vec<PeerId>,
    /// Recipients that have not passed it yet.
    remaining: usize,
    body: Body,
}

#[derive(Debug)]
enum Body {
    /// Not encoded yet.
    Export(Export),
    Encoded(Vec<Bytes>),
    /// Every recipient has passed it.
    Done,
}

impl Body {
    fn weight(&self) -> usize {
        match self {
            // A prefix in memory (with its share of an attribute tuple) is ~32 bytes.
            Body::Export(e) => {
                let n: usize = e.announce.iter().map(|a| a.3.len()).sum::<usize>()
                    + e.withdraw.iter().map(|w| w.1.len()).sum::<usize>();
                64 + 32 * n
            }
            Body::Encoded(m) => m.iter().map(|b| b.len() + 32).sum(),
            Body::Done => 0,
        }
    }
}

/// Where a peer is in the log: the entry (by sequence number) and the message within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    seq: u64,
    msg: usize,
}

/// The shared log and the peers reading it.
#[derive(Debug)]
pub(super) struct Outbox {
    entries: VecDeque<Entry>,
    /// Sequence number of `entries[0]`.
    base: u64,
    cursors: HashMap<PeerId, Cursor>,
    weight: usize,
    /// Weight above which [`Outbox::is_full`].
    limit: usize,
}

impl Default for Outbox {
    fn default() -> Outbox {
        Outbox::with_limit(DEFAULT_LOG_LIMIT)
    }
}

impl Outbox {
    /// An empty log that is full above `limit`.
    pub fn with_limit(limit: usize) -> Outbox {
        Outbox {
            entries: VecDeque::new(),
            base: 0,
            cursors: HashMap::new(),
            weight: 0,
            limit,
        }
    }

    /// A session came up: it is owed what is logged from now on.
    pub fn join(&mut self, peer: PeerId) {
        let end = self.end();
        self.leave(peer);
        self.cursors.insert(peer, Cursor { seq: end, msg: 0 });
    }

    /// A session went down or was removed: what it was owed is dropped.
    pub fn leave(&mut self, peer: PeerId) {
        let Some(seq) = self.cursor(peer).map(|c| c.seq) else {
            return;
        };
        self.cursors.remove(&peer);
        for seq in seq..self.end() {
            let i = (seq - self.base) as usize;
            if self.entries[i].peers.binary_search(&peer).is_ok() {
                self.pass(i);
            }
        }
        self.trim();
    }

    /// Logs an export for its recipients that are joined; returns them.
    pub fn push_export(&mut self, mut export: Export) -> Vec<PeerId> {
        export.peers.retain(|p| self.cursors.contains_key(p));
        let peers = export.peers.clone();
        self.push(peers.clone(), Body::Export(export));
        peers
    }

    /// Logs messages already encoded for one peer (End-of-RIB, ROUTE-REFRESH), behind what it
    /// is owed already. False if the peer is not joined.
    pub fn push_raw(&mut self, peer: PeerId, messages: Vec<Bytes>) -> bool {
        if !self.cursors.contains_key(&peer) {
            return false;
        }
        self.push(vec![peer], Body::Encoded(messages));
        true
    }

    fn push(&mut self, peers: Vec<PeerId>, body: Body) {
        if peers.is_empty() {
            return;
        }
        self.weight += body.weight();
        self.entries.push_back(Entry {
            remaining: peers.len(),
            peers,
            body,
        });
    }

    /// The next message owed to `peer`, without taking it; encodes its entry if no recipient
    /// has yet.
    pub fn peek(&mut self, peer: PeerId) -> Option<Bytes> {
        loop {
            let cursor = self.cursor(peer)?;
            if cursor.seq >= self.end() {
                return None;
            }
            let i = (cursor.seq - self.base) as usize;
            if self.entries[i].peers.binary_search(&peer).is_err() {
                self.set(peer, cursor.seq + 1, 0);
                continue;
            }
            self.encode(i);
            if let Body::Encoded(msgs) = &self.entries[i].body
                && let Some(m) = msgs.get(cursor.msg)
            {
                return Some(m.clone());
            }
            // Nothing (left) in it for this peer.
            self.set(peer, cursor.seq + 1, 0);
            self.pass(i);
            self.trim();
        }
    }

    /// The message `peek` returned was sent (or dropped): move past it.
    pub fn advance(&mut self, peer: PeerId) {
        let Some(cursor) = self.cursor(peer) else {
            return;
        };
        if cursor.seq >= self.end() {
            return;
        }
        let i = (cursor.seq - self.base) as usize;
        let len = match &self.entries[i].body {
            Body::Encoded(m) => m.len(),
            _ => 0,
        };
        if cursor.msg + 1 < len {
            self.set(peer, cursor.seq, cursor.msg + 1);
        } else {
            self.set(peer, cursor.seq + 1, 0);
            self.pass(i);
            self.trim();
        }
    }

    /// Whether the speaker should wait for peers to catch up before taking more changes.
    pub fn is_full(&self) -> bool {
        self.weight > self.limit
    }

    /// Entries held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    fn end(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    /// `peer`'s cursor. Entries its cursor had not reached yet may be gone already if none was
    /// addressed to it (one addressed to it stays until it passes): it then starts at the
    /// first entry still held.
    fn cursor(&mut self, peer: PeerId) -> Option<Cursor> {
        let base = self.base;
        let c = self.cursors.get_mut(&peer)?;
        if c.seq < base {
            *c = Cursor { seq: base, msg: 0 };
        }
        Some(*c)
    }

    fn set(&mut self, peer: PeerId, seq: u64, msg: usize) {
        if let Some(c) = self.cursors.get_mut(&peer) {
            *c = Cursor { seq, msg };
        }
    }

    fn encode(&mut self, i: usize) {
        let entry = &mut self.entries[i];
        let Body::Export(ex) = &entry.body else {
            return;
        };
        let mut messages = Vec::new();
        for (family, prefixes) in &ex.withdraw {
            match wire::pack_withdrawals(*family, prefixes, &ex.ctx) {
                Ok(m) => messages.extend(m),
                Err(e) => tracing::warn!(error = %e, "cannot encode withdrawals"),
            }
        }
        for (attrs, next_hop, family, prefixes) in &ex.announce {
            match wire::pack_announcements(attrs, next_hop, *family, prefixes, &ex.ctx) {
                Ok(m) => messages.extend(m),
                Err(e) => tracing::warn!(error = %e, "cannot encode announcements"),
            }
        }
        let body = Body::Encoded(messages);
        let (old, new) = (entry.body.weight(), body.weight());
        entry.body = body;
        self.weight = self.weight + new - old;
    }

    /// One recipient is done with entry `i`.
    fn pass(&mut self, i: usize) {
        let entry = &mut self.entries[i];
        entry.remaining = entry.remaining.saturating_sub(1);
        if entry.remaining == 0 {
            let old = entry.body.weight();
            entry.body = Body::Done;
            entry.peers = Vec::new();
            self.weight -= old;
        }
    }

    /// Drops finished entries from the front.
    fn trim(&mut self) {
        while self.entries.front().is_some_and(|e| e.remaining == 0) {
            self.entries.pop_front();
            self.base += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{CodecContext, Family, Message, Prefix, Update};

    fn withdraw(peers: &[PeerId], prefix: &str) -> Export {
        Export {
            peers: peers.to_vec(),
            ctx: CodecContext::default(),
            announce: Vec::new(),
            withdraw: vec![(Family::Ipv4Unicast, vec![prefix.parse::<Prefix>().unwrap()])],
        }
    }

    fn drain(outbox: &mut Outbox, peer: PeerId) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some(m) = outbox.peek(peer) {
            out.push(m);
            outbox.advance(peer);
        }
        out
    }

    #[test]
    fn one_entry_serves_every_recipient_and_goes_when_all_have_passed() {
        let mut o = Outbox::default();
        for p in 1..=3 {
            o.join(p);
        }
        o.push_export(withdraw(&[1, 2, 3], "10.0.0.0/26"));
        o.push_export(withdraw(&[1, 3], "10.0.1.0/26"));
        assert_eq!(o.len(), 2);
        let one = drain(&mut o, 1);
        assert_eq!(one.len(), 2);
        assert_eq!(drain(&mut o, 2), vec![one[0].clone()]);
        assert_eq!(o.len(), 2, "peer 3 still owes both");
        // The very same bytes, encoded once.
        let three = drain(&mut o, 3);
        assert_eq!(three[0].as_ptr(), one[0].as_ptr());
        assert_eq!(o.len(), 0);
        assert!(!o.is_full());
        assert_eq!(o.weight, 0);
    }

    #[test]
    fn a_peer_that_leaves_frees_what_it_was_owed_and_starts_afresh() {
        let mut o = Outbox::default();
        o.join(1);
        o.join(2);
        o.push_export(withdraw(&[1, 2], "10.0.0.0/26"));
        drain(&mut o, 1);
        o.leave(2);
        assert_eq!(o.len(), 0);
        assert!(o.peek(2).is_none(), "not joined");
        o.join(2);
        assert!(o.peek(2).is_none(), "owed only what comes after joining");
        o.push_export(withdraw(&[1, 2], "10.0.1.0/26"));
        assert_eq!(drain(&mut o, 2).len(), 1);
    }

    #[test]
    fn a_peer_behind_entries_it_was_never_owed_skips_them_once_they_are_gone() {
        let mut o = Outbox::default();
        o.join(1);
        o.join(2);
        o.push_export(withdraw(&[2], "10.0.0.0/26"));
        o.push_export(withdraw(&[2], "10.0.1.0/26"));
        assert_eq!(drain(&mut o, 2).len(), 2);
        assert_eq!(o.len(), 0, "both gone, peer 1's cursor still before them");
        o.push_export(withdraw(&[1, 2], "10.0.2.0/26"));
        assert_eq!(drain(&mut o, 1).len(), 1);
        o.leave(2);
        assert_eq!(o.len(), 0);
        o.leave(1);
    }

    #[test]
    fn raw_messages_keep_their_place_behind_owed_changes() {
        let mut o = Outbox::default();
        o.join(1);
        o.push_export(withdraw(&[1], "10.0.0.0/26"));
        let eor = Message::Update(Update::end_of_rib(Family::Ipv4Unicast))
            .to_bytes(&CodecContext::default())
            .unwrap();
        assert!(o.push_raw(1, vec![eor.clone()]));
        assert!(!o.push_raw(9, vec![eor.clone()]), "peer 9 is not joined");
        let out = drain(&mut o, 1);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1], eor);
    }

    #[test]
    fn recipients_not_joined_are_not_owed() {
        let mut o = Outbox::default();
        o.join(1);
        assert_eq!(o.push_export(withdraw(&[1, 2], "10.0.0.0/26")), vec![1]);
        assert!(o.push_export(withdraw(&[2], "10.0.1.0/26")).is_empty());
        assert_eq!(o.len(), 1);
    }
}
