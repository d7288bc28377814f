//! [`Acked`]: the writes a writer acknowledged, to check after a fault (a SIGKILL, a full
//! disk) that none was lost and that the request cut off by the fault was applied wholly or not
//! at all.

use std::collections::HashMap;

use crate::{Lookup, Table};

/// What a client knows of its hosts: the acknowledged state of each (a backend, or `None` once
/// deleted), and the changes of the request in flight, if any.
#[derive(Default)]
pub struct Acked {
    acked: HashMap<String, Option<String>>,
    pending: Vec<(String, Option<String>)>,
    acks: u64,
}

impl Acked {
    /// A request making `changes` is about to be sent.
    pub fn send(&mut self, changes: Vec<(String, Option<String>)>) {
        self.pending = changes;
    }

    /// The request sent was acknowledged: its changes are now promised.
    pub fn acknowledged(&mut self) {
        for (h, b) in self.pending.drain(..) {
            self.acked.insert(h, b);
        }
        self.acks += 1;
    }

    /// `send` and `acknowledged` at once, for a request answered 2xx.
    pub fn record(&mut self, changes: Vec<(String, Option<String>)>) {
        self.send(changes);
        self.acknowledged();
    }

    /// Acknowledged requests so far.
    pub fn acks(&self) -> u64 {
        self.acks
    }

    /// Checks the table file a writer left: every acknowledged entry that no request in flight
    /// touched reads back from `table` as promised (deleted ones miss).
    pub fn check_table(&self, table: &Table, when: &str) {
        let pending: Vec<&String> = self.pending.iter().map(|(h, _)| h).collect();
        for (h, want) in self.acked.iter().filter(|(h, _)| !pending.contains(h)) {
            match (table.lookup(h.as_bytes()), want) {
                (Lookup::Hit(v), Some(b)) => assert_eq!(v.as_str(), b, "{when}: {h}"),
                (Lookup::Miss, None) => {}
                (got, want) => panic!(
                    "{when}: {h} is {:?} in the table, want {want:?}",
                    matches!(got, Lookup::Hit(_))
                ),
            }
        }
    }

    /// Checks `store` (every entry, as listed by the writer): every acknowledged write is
    /// there, and the request in flight was applied wholly or not at all (then forgotten, or
    /// counted as acknowledged if applied).
    pub fn check(&mut self, store: &[(String, String)], when: &str) {
        let actual: HashMap<&str, &str> = store
            .iter()
            .map(|(h, b)| (h.as_str(), b.as_str()))
            .collect();
        let pending: HashMap<String, Option<String>> = self.pending.iter().cloned().collect();
        for (h, want) in &self.acked {
            if !pending.contains_key(h) {
                assert_eq!(
                    actual.get(h.as_str()).copied(),
                    want.as_deref(),
                    "{when}: acknowledged write of {h} lost"
                );
            }
        }
        let applied = self
            .pending
            .iter()
            .all(|(h, b)| actual.get(h.as_str()).copied() == b.as_deref());
        let untouched = self.pending.iter().all(|(h, _)| {
            actual.get(h.as_str()).copied() == self.acked.get(h).cloned().flatten().as_deref()
        });
        assert!(
            applied || untouched,
            "{when}: request applied in part: {:?}",
            self.pending
        );
        if applied {
            for (h, b) in self.pending.drain(..) {
                self.acked.insert(h, b);
            }
        }
        self.pending.clear();
    }
}
