//! Records kept in creation order and found by id without a scan.
//!
//! The simulators answer every status read by id. Found by scanning, each read cost time in
//! proportion to the builds made so far: at 20,000 builds the benchmark's provider stand-in spent
//! 80 % of its CPU comparing ids, and slowed the gateway it stood in for.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};

/// A record with an id that never changes once it is stored.
pub trait Identified {
    /// The id the record is found by.
    fn id(&self) -> &str;
}

/// Records in creation order (read and changed in place like a slice), with an index by id.
#[derive(Debug, Clone)]
pub struct Ledger<T> {
    items: Vec<T>,
    at: HashMap<String, usize>,
}

impl<T> Default for Ledger<T> {
    fn default() -> Self {
        Self { items: Vec::new(), at: HashMap::new() }
    }
}

impl<T: Identified> Ledger<T> {
    /// Store a record after every earlier one.
    pub fn push(&mut self, item: T) {
        self.at.insert(item.id().to_string(), self.items.len());
        self.items.push(item);
    }

    /// Where the record with this id is.
    pub fn position_of(&self, id: &str) -> Option<usize> {
        self.at.get(id).copied()
    }

    /// The record with this id.
    pub fn by_id(&self, id: &str) -> Option<&T> {
        self.position_of(id).map(|i| &self.items[i])
    }

    /// The record with this id, to change (never its id).
    pub fn by_id_mut(&mut self, id: &str) -> Option<&mut T> {
        self.position_of(id).map(|i| &mut self.items[i])
    }
}

impl<T> Deref for Ledger<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.items
    }
}

impl<T> DerefMut for Ledger<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Build {
        id: String,
        n: u32,
    }

    impl Identified for Build {
        fn id(&self) -> &str {
            &self.id
        }
    }

    #[test]
    fn finds_by_id_and_keeps_creation_order() {
        let mut ledger = Ledger::default();
        for (id, n) in [("b", 1), ("a", 2), ("c", 3)] {
            ledger.push(Build { id: id.into(), n });
        }
        assert_eq!(ledger.iter().map(|b| b.n).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(ledger.position_of("a"), Some(1));
        assert_eq!(ledger.by_id("c").map(|b| b.n), Some(3));
        assert!(ledger.by_id("d").is_none());
        ledger.by_id_mut("b").unwrap().n = 10;
        ledger[2].n = 30;
        assert_eq!(ledger.to_vec().iter().map(|b| b.n).collect::<Vec<_>>(), [10, 2, 30]);
    }
}
