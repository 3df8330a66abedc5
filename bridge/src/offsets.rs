//! Which source positions may be committed, when records of one partition
//! finish out of order.
//!
//! Records go to per-room lanes, so a slow room finishes its records after
//! a fast room finishes later ones. A partition may only be committed up to
//! its oldest unfinished record: committing past it would lose that record
//! if the bridge crashed. Finished records above it are simply delivered
//! again after a crash, and the rooms' idempotency keys make that harmless.

use std::collections::{BTreeMap, BTreeSet};

use crate::broker::Position;

#[derive(Debug, Default)]
struct Partition {
    /// Taken and not finished.
    unfinished: BTreeSet<i64>,
    /// One past the highest offset taken.
    next: i64,
    /// The last commit point handed out.
    committed: i64,
}

/// Commit bookkeeping for every partition the source hands out.
#[derive(Debug, Default)]
pub struct Offsets {
    partitions: BTreeMap<i32, Partition>,
}

impl Offsets {
    /// A record was taken from the source.
    pub fn taken(&mut self, at: Position) {
        let partition = self.partitions.entry(at.partition).or_default();
        if partition.unfinished.is_empty() && partition.next == 0 {
            partition.committed = at.offset;
        }
        partition.unfinished.insert(at.offset);
        partition.next = partition.next.max(at.offset + 1);
    }

    /// A record is in its room (or dead-lettered). Returns the partition's
    /// new commit point, the offset to resume from, when it moved.
    pub fn finished(&mut self, at: Position) -> Option<i64> {
        let partition = self.partitions.get_mut(&at.partition)?;
        partition.unfinished.remove(&at.offset);
        let point = partition
            .unfinished
            .first()
            .copied()
            .unwrap_or(partition.next);
        (point > partition.committed).then(|| {
            partition.committed = point;
            point
        })
    }

    /// Records taken and not finished, over all partitions.
    pub fn unfinished(&self) -> usize {
        self.partitions.values().map(|p| p.unfinished.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(partition: i32, offset: i64) -> Position {
        Position { partition, offset }
    }

    #[test]
    fn commits_only_below_the_oldest_unfinished_record() {
        let mut o = Offsets::default();
        for offset in 10..15 {
            o.taken(at(0, offset));
        }
        assert_eq!(o.finished(at(0, 12)), None, "10 and 11 are still out");
        assert_eq!(o.finished(at(0, 11)), None);
        assert_eq!(o.finished(at(0, 10)), Some(13), "resume at 13");
        assert_eq!(o.finished(at(0, 14)), None, "13 is still out");
        assert_eq!(o.finished(at(0, 13)), Some(15));
        assert_eq!(o.unfinished(), 0);
    }

    #[test]
    fn the_commit_point_never_moves_back() {
        // Records consumed again (a partition handed back after a
        // rebalance) below what was committed do not pull the point back.
        let mut o = Offsets::default();
        for offset in 0..3 {
            o.taken(at(0, offset));
            o.finished(at(0, offset));
        }
        o.taken(at(0, 1));
        o.taken(at(0, 2));
        assert_eq!(o.finished(at(0, 1)), None, "3 is committed already");
        assert_eq!(o.finished(at(0, 2)), None);
        o.taken(at(0, 3));
        assert_eq!(o.finished(at(0, 3)), Some(4));
    }

    #[test]
    fn partitions_are_independent() {
        let mut o = Offsets::default();
        o.taken(at(0, 0));
        o.taken(at(1, 7));
        o.taken(at(1, 8));
        assert_eq!(o.finished(at(1, 7)), Some(8));
        assert_eq!(o.unfinished(), 2);
        assert_eq!(o.finished(at(0, 0)), Some(1));
        assert_eq!(o.finished(at(9, 0)), None, "never taken");
    }
}
