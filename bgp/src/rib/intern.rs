//! Attribute interning: one shared `Arc` per distinct value, counted by its users.
//!
//! A million routes that carry the same path attributes share one [`PathAttributes`] allocation.
//! The interner counts how many holders (routes, or derived sets) use each value and forgets the
//! value when the count reaches zero; an `Arc` still held elsewhere (a [`super::RouteView`] the
//! speaker kept) stays valid, it is merely no longer shared with new routes.

use crate::wire::{MpNextHop, PathAttributes};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A set of interned values with a use count each.
#[derive(Debug)]
pub struct Interner<T> {
    map: HashMap<Arc<T>, u32>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Interner {
            map: HashMap::new(),
        }
    }
}

impl<T: Hash + Eq> Interner<T> {
    /// The shared `Arc` equal to `value`, created if absent; counts one more user.
    pub fn intern(&mut self, value: T) -> Arc<T> {
        if let Some((shared, _)) = self.map.get_key_value(&value) {
            let shared = Arc::clone(shared);
            self.acquire(&shared);
            return shared;
        }
        let shared = Arc::new(value);
        self.map.insert(Arc::clone(&shared), 1);
        shared
    }

    /// Counts one more user of an already interned value. Returns false (and counts nothing)
    /// when `shared` is not interned here.
    pub fn acquire(&mut self, shared: &Arc<T>) -> bool {
        match self.map.get_mut(shared.as_ref()) {
            Some(n) => {
                *n += 1;
                true
            }
            None => false,
        }
    }

    /// Counts one user less; forgets the value when none is left. Returns true when it was
    /// forgotten (the last user went).
    pub fn release(&mut self, shared: &Arc<T>) -> bool {
        let Some(n) = self.map.get_mut(shared.as_ref()) else {
            return false;
        };
        *n -= 1;
        if *n == 0 {
            self.map.remove(shared.as_ref());
            true
        } else {
            false
        }
    }

    /// How many users `value` has (0 when not interned).
    pub fn users(&self, value: &T) -> u32 {
        self.map.get(value).copied().unwrap_or(0)
    }

    /// Number of distinct values held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes used by the set itself and the shared allocations (`Arc` header and value), not
    /// counting heap memory owned by the values.
    pub fn memory_estimate(&self) -> usize {
        let table = hash_table_bytes::<(Arc<T>, u32)>(self.map.capacity());
        table + self.map.len() * (2 * std::mem::size_of::<usize>() + std::mem::size_of::<T>())
    }
}

/// Bytes a std `HashMap` with `capacity` uses for its buckets and control bytes (the SwissTable
/// layout: a power-of-two bucket count with 1/8 kept free, one control byte per bucket).
pub fn hash_table_bytes<E>(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 8 {
        (capacity + 1).next_power_of_two()
    } else {
        (capacity * 8 / 7).next_power_of_two()
    };
    buckets * (std::mem::size_of::<E>() + 1) + 16
}

/// What a route points to: its interned path attributes and the next hop it was received with.
///
/// Interned in its own right so that a path stays one pointer even for IPv6, whose next hop
/// travels in MP_REACH_NLRI rather than in the attributes. Since `attrs` is itself interned,
/// equality and hashing use its pointer.
#[derive(Debug, Clone)]
pub struct StoredAttrs {
    pub attrs: Arc<PathAttributes>,
    /// None for a locally originated route without an explicit next hop.
    pub next_hop: Option<MpNextHop>,
}

impl PartialEq for StoredAttrs {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.attrs, &other.attrs) && self.next_hop == other.next_hop
    }
}

impl Eq for StoredAttrs {}

impl Hash for StoredAttrs {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.attrs) as usize).hash(state);
        self.next_hop.hash(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Origin;

    fn attrs(med: u32) -> PathAttributes {
        PathAttributes {
            origin: Some(Origin::Igp),
            med: Some(med),
            ..PathAttributes::default()
        }
    }

    #[test]
    fn equal_values_share_one_arc() {
        let mut i = Interner::default();
        let a = i.intern(attrs(1));
        let b = i.intern(attrs(1));
        let c = i.intern(attrs(2));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(i.len(), 2);
        assert_eq!(i.users(&attrs(1)), 2);
    }

    #[test]
    fn value_is_forgotten_when_last_user_releases() {
        let mut i = Interner::default();
        let a = i.intern(attrs(1));
        assert!(i.acquire(&a));
        assert!(!i.release(&a));
        assert_eq!(i.len(), 1);
        assert!(i.release(&a));
        assert_eq!(i.len(), 0);
        // A later equal value gets a fresh allocation, the old Arc stays usable.
        let b = i.intern(attrs(1));
        assert_eq!(*a, *b);
        assert_eq!(i.users(&attrs(1)), 1);
    }

    #[test]
    fn stored_attrs_compare_by_attribute_pointer() {
        let mut i = Interner::default();
        let a = i.intern(attrs(1));
        let other = Arc::new(attrs(1));
        let s1 = StoredAttrs {
            attrs: a.clone(),
            next_hop: None,
        };
        let s2 = StoredAttrs {
            attrs: other,
            next_hop: None,
        };
        assert_ne!(s1, s2);
        assert_eq!(s1.clone(), s1);
    }
}
