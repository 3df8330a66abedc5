//! The room's idempotency (docs/protocol.md, "Idempotency"): which drafts
//! repeat a message the room already stored, by id and owner, or (from the
//! bridge) by the Kafka offset of their partition.
//!
//! The window of ids ([`Keys`]) is memory only: it is seeded from the stored
//! rows once per wake, by the first publish that names an id, so a room
//! whose publishers never name ids never reads them.

use std::cell::RefCell;

use roomcast_protocol::dedupe::{Keys, Verdict};
use roomcast_protocol::draft::{Draft, Origin};
use roomcast_protocol::wire::Message;
use worker::Result;

use crate::store::Store;

/// The owner of the ids the bridge publishes under, whatever the subject
/// of the bridge token in use: every bridge instance may retry any record.
pub(super) const BRIDGE_OWNER: &str = "\u{0}bridge";

#[derive(Default)]
pub(super) struct Idempotency {
    keys: RefCell<Option<Keys>>,
}

impl Idempotency {
    /// For each draft, the seq of the message it repeats, if any: the same
    /// id from the same `owner`, or (from the bridge) a Kafka record at or
    /// below the highest offset the room stored from its partition, whose
    /// seq is 0 when the room no longer knows it. A draft whose id another
    /// owner holds refuses the whole batch, and its id is returned.
    pub fn duplicates(
        &self,
        store: &Store,
        drafts: &[Draft],
        owner: &str,
        bridge: bool,
    ) -> Result<std::result::Result<Vec<Option<u64>>, String>> {
        if drafts.iter().all(|d| d.id.is_none() && d.kafka.is_none()) {
            return Ok(Ok(vec![None; drafts.len()]));
        }
        self.seed(store)?;
        let keys = self.keys.borrow();
        let mut duplicates = Vec::with_capacity(drafts.len());
        for draft in drafts {
            let verdict = match (draft.id.as_deref(), keys.as_ref()) {
                (Some(id), Some(keys)) => keys.check(id, owner),
                _ => Verdict::New,
            };
            let consumed_before = bridge
                && draft.kafka.as_ref().is_some_and(|p| {
                    store
                        .facts()
                        .inbound_offset(&p.partition_key())
                        .is_some_and(|stored| p.offset <= stored)
                });
            duplicates.push(match verdict {
                Verdict::Duplicate { seq } => Some(seq),
                _ if consumed_before => Some(0),
                Verdict::New => None,
                Verdict::Conflict => {
                    return Ok(Err(draft.id.clone().unwrap_or_default()));
                }
            });
        }
        Ok(Ok(duplicates))
    }

    /// Loads the ids of the stored messages into the window, once per wake.
    fn seed(&self, store: &Store) -> Result<()> {
        if self.keys.borrow().is_some() {
            return Ok(());
        }
        let mut keys = Keys::default();
        for row in store.keys()? {
            let owner = if row.origin == Origin::Kafka.as_str() {
                BRIDGE_OWNER
            } else {
                row.sender.as_str()
            };
            keys.record(&row.id, owner, row.seq);
        }
        *self.keys.borrow_mut() = Some(keys);
        Ok(())
    }

    /// Remembers newly stored messages of `owner` (once the window is
    /// loaded; until then the stored rows are the record).
    pub fn record(&self, messages: &[Message], owner: &str) {
        if let Some(keys) = self.keys.borrow_mut().as_mut() {
            for message in messages {
                keys.record(&message.id, owner, message.seq);
            }
        }
    }

    /// Forgets the window (the room's storage was deleted).
    pub fn forget(&self) {
        *self.keys.borrow_mut() = None;
    }
}
