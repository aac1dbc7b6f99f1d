//! One `Arc` per distinct value: the export policy and import filter chain of every session
//! that has the same ones are shared, not built and kept once per peer (a mesh's 999 sessions
//! had 999 equal filter chains, each with its own rule index: 0.85 MiB at 1,000 nodes;
//! issue 12).

use std::sync::Arc;

/// The distinct values in use, each once.
#[derive(Debug)]
pub(super) struct Shared<T> {
    held: Vec<Arc<T>>,
}

impl<T> Default for Shared<T> {
    fn default() -> Self {
        Shared { held: Vec::new() }
    }
}

impl<T: PartialEq> Shared<T> {
    /// The shared `Arc` equal to `value`, made from it if none is in use. Values nobody else
    /// holds any more are let go first.
    pub(super) fn get(&mut self, value: T) -> Arc<T> {
        self.held.retain(|a| Arc::strong_count(a) > 1);
        if let Some(a) = self.held.iter().find(|a| ***a == value) {
            return Arc::clone(a);
        }
        let a = Arc::new(value);
        self.held.push(Arc::clone(&a));
        a
    }
}

#[cfg(test)]
mod tests {
    use super::Shared;
    use std::sync::Arc;

    #[test]
    fn equal_values_share_one_arc_and_unused_ones_go() {
        let mut s = Shared::default();
        let a = s.get(String::from("pools"));
        let b = s.get(String::from("pools"));
        let c = s.get(String::from("other"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(s.held.len(), 2);
        drop(c);
        let d = s.get(String::from("pools"));
        assert!(Arc::ptr_eq(&a, &d));
        assert_eq!(s.held.len(), 1, "the value nobody held was let go");
    }
}
