//! Idempotency keys: which publisher a message id belongs to in a room.
//!
//! A publisher may name its message (`id`), so that a retry after a lost
//! ack is recognised instead of stored twice. The id is also the message's
//! id, which must stay unique in the room, and a key is only trusted from
//! the subject that used it first: the same id from another subject is a
//! conflict, never a duplicate (otherwise anyone could pre-claim another
//! sender's id and make its message vanish as a "duplicate").
//!
//! The keys live in the room's memory, seeded from the stored history when
//! the room wakes; the stored messages carry their keys, so no row is
//! written for a key. The window is the last [`KEY_WINDOW`] keys while the
//! room stays in memory, and at least the retained history after it wakes.

use std::collections::{HashMap, VecDeque};

/// Keys remembered in memory; the oldest leave first.
pub const KEY_WINDOW: usize = 50_000;

/// What a key means for a new publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not seen: store the message under this id.
    New,
    /// The same subject sent it before, as message `seq`: acknowledge that.
    Duplicate { seq: u64 },
    /// Another subject used this id: refuse.
    Conflict,
}

#[derive(Debug)]
struct Owner {
    sender: String,
    seq: u64,
}

/// The keys a room knows, in the order they were stored.
#[derive(Debug, Default)]
pub struct Keys {
    owners: HashMap<String, Owner>,
    order: VecDeque<String>,
}

impl Keys {
    pub fn check(&self, key: &str, sender: &str) -> Verdict {
        match self.owners.get(key) {
            None => Verdict::New,
            Some(owner) if owner.sender == sender => Verdict::Duplicate { seq: owner.seq },
            Some(_) => Verdict::Conflict,
        }
    }

    /// Remembers that `sender` stored message `seq` under `key`.
    pub fn record(&mut self, key: &str, sender: &str, seq: u64) {
        let owner = Owner {
            sender: sender.to_owned(),
            seq,
        };
        if self.owners.insert(key.to_owned(), owner).is_none() {
            self.order.push_back(key.to_owned());
        }
        let excess = self.order.len().saturating_sub(KEY_WINDOW);
        for oldest in self.order.drain(..excess) {
            self.owners.remove(&oldest);
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn a_key_belongs_to_its_first_sender() {
        let mut keys = Keys::default();
        assert!(keys.is_empty());
        assert_eq!(keys.check("k", "alice"), Verdict::New);
        keys.record("k", "alice", 7);
        assert!(!keys.is_empty());
        assert_eq!(keys.check("k", "alice"), Verdict::Duplicate { seq: 7 });
        assert_eq!(keys.check("k", "mallory"), Verdict::Conflict);
    }

    #[test]
    fn the_window_keeps_the_newest_keys() {
        let mut keys = Keys::default();
        for seq in 0..(KEY_WINDOW as u64 + 10) {
            keys.record(&format!("k{seq}"), "s", seq);
        }
        assert_eq!(keys.len(), KEY_WINDOW);
        assert_eq!(keys.check("k0", "s"), Verdict::New, "forgotten");
        assert_eq!(
            keys.check(&format!("k{}", KEY_WINDOW + 9), "s"),
            Verdict::Duplicate {
                seq: KEY_WINDOW as u64 + 9
            }
        );
    }
}
