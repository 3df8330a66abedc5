//! History and resume arithmetic (docs/protocol.md, "History and resume").
//!
//! A room's history is the contiguous run of sequence numbers
//! `oldest..=head` that is still stored. Whether a reconnecting client can
//! resume without a gap, how much of it one turn may carry, and which rows
//! to trim are plain arithmetic on those numbers, kept here so the Durable
//! Object only runs the queries.
//!
//! One turn of a room never carries more than [`TURN_BYTES`] of message
//! data, whatever the message sizes or the history length: a page of
//! `GET /messages` stops there, a resume that would replay more is told to
//! page through HTTP instead, and the bridge link is fed in windows.

use crate::error::{ErrorCode, Refusal};

/// Default and maximum page size of `GET /messages`.
pub const DEFAULT_PAGE: u64 = 100;
pub const MAX_PAGE: u64 = 1000;

/// The most message data (bytes of `data`) one turn reads or sends: a page,
/// a replay on connect, a step of the bridge link's window.
pub const TURN_BYTES: u64 = 4 * 1024 * 1024;

/// The most messages a connect replays before any live one; a longer
/// resume is handed to HTTP paging (see [`replay_route`]).
pub const MAX_REPLAY: u64 = 1000;

/// How a resuming client gets the messages it missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// On the socket, right after `welcome`, before any live message.
    Socket { after: u64 },
    /// Too much for one turn: the client pages `GET /messages?since=after`
    /// up to the welcome's `head`; live messages after it arrive on the
    /// socket meanwhile.
    Http { after: u64 },
}

/// Routes a replay of `count` messages holding `bytes` of data.
pub fn replay_route(after: u64, count: u64, bytes: u64) -> Replay {
    if count <= MAX_REPLAY && bytes <= TURN_BYTES {
        Replay::Socket { after }
    } else {
        Replay::Http { after }
    }
}

/// What the room stores, by sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retained {
    /// Highest seq ever assigned (0 before the first message).
    pub head: u64,
    /// Lowest seq still stored, `None` when nothing is stored.
    pub oldest: Option<u64>,
}

impl Retained {
    /// Are all messages with `seq > since` still stored?
    pub fn covers_after(&self, since: u64) -> bool {
        if since >= self.head {
            return true;
        }
        self.oldest.is_some_and(|oldest| oldest <= since + 1)
    }
}

/// How a connecting client is brought up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// The `recovered` flag of `welcome`.
    pub recovered: bool,
    /// Replay every stored message with `seq > after`, or nothing when `None`.
    pub replay_after: Option<u64>,
}

/// Plans a connect with `?since=S&epoch=E` against the room's state.
///
/// Recovery needs both: a `since` without the matching epoch refers to a
/// sequence that may have been reset, and a `since` ahead of the head can only
/// come from another epoch.
pub fn plan_resume(
    since: Option<u64>,
    client_epoch: Option<&str>,
    room_epoch: &str,
    retained: Retained,
) -> Resume {
    let nothing = Resume {
        recovered: false,
        replay_after: None,
    };
    let Some(since) = since else { return nothing };
    if client_epoch != Some(room_epoch) || since > retained.head || !retained.covers_after(since) {
        return nothing;
    }
    Resume {
        recovered: true,
        replay_after: (since < retained.head).then_some(since),
    }
}

/// Highest seq that the count limit allows trimming: rows with
/// `seq <= floor` may go so that at most `limit` remain.
pub fn count_floor(head: u64, limit: u64) -> u64 {
    head.saturating_sub(limit)
}

/// What the bridge still needs from a room's history (docs/internals.md, "The outbox"): the
/// room is the outbox, so rows above the bridge's cursor stay, up to a cap
/// that keeps a room whose bridge is gone for good from growing forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outbox {
    /// Highest seq the bridge confirmed as written to Kafka.
    pub cursor: u64,
    /// Most messages held for the bridge beyond the history limits.
    pub limit: u64,
}

/// Highest seq that may be deleted when the history limits allow deleting
/// everything up to `floor`: the bridge's unconfirmed rows are held back,
/// unless holding them would keep more than the outbox limit.
pub fn trim_ceiling(head: u64, floor: u64, outbox: Option<Outbox>) -> u64 {
    let floor = floor.min(head);
    match outbox {
        None => floor,
        Some(outbox) => floor
            .min(outbox.cursor)
            .max(count_floor(head, outbox.limit).min(floor)),
    }
}

/// How many unconfirmed messages may wait beside a history of `capacity`
/// messages: the history itself counts toward `OUTBOX_LIMIT` (it holds the
/// newest unconfirmed ones whenever any wait beside it), so a room keeps
/// `max(HISTORY_LIMIT, OUTBOX_LIMIT)` messages for a bridge that is away.
pub fn outbox_room(outbox_limit: u64, capacity: u64) -> u64 {
    outbox_limit.saturating_sub(capacity)
}

/// The unconfirmed messages a trim up to `ceiling` drops: the outbox was
/// full, and these never reached the bridge. `None` when none are lost.
pub fn dropped_unconfirmed(ceiling: u64, outbox: Option<Outbox>) -> Option<(u64, u64)> {
    let outbox = outbox?;
    (ceiling > outbox.cursor).then(|| (outbox.cursor + 1, ceiling))
}

/// Oldest timestamp (ms) the time limit keeps.
pub fn ttl_cutoff_ms(now_ms: u64, ttl_secs: u64) -> u64 {
    now_ms.saturating_sub(ttl_secs.saturating_mul(1000))
}

/// A parsed `?since=S&limit=L` query of `GET /messages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub since: u64,
    pub limit: u64,
}

impl Page {
    /// Parses the query values; `limit` is clamped to [`MAX_PAGE`] and at least 1.
    pub fn parse(since: Option<&str>, limit: Option<&str>) -> Result<Page, Refusal> {
        let since = parse_u64("since", since, 0)?;
        let limit = parse_u64("limit", limit, DEFAULT_PAGE)?.clamp(1, MAX_PAGE);
        Ok(Page { since, limit })
    }
}

/// Parses an optional non-negative integer query value.
pub fn parse_u64(name: &str, value: Option<&str>, default: u64) -> Result<u64, Refusal> {
    match value {
        None | Some("") => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            Refusal::new(
                ErrorCode::BadRequest,
                format!("{name} must be a non-negative integer, got {v:?}"),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const E: &str = "e_1";

    fn kept(head: u64, oldest: Option<u64>) -> Retained {
        Retained { head, oldest }
    }

    #[test]
    fn fresh_connect_replays_nothing() {
        assert_eq!(
            plan_resume(None, None, E, kept(5, Some(1))),
            Resume {
                recovered: false,
                replay_after: None
            }
        );
    }

    #[test]
    fn resume_with_everything_stored() {
        let r = plan_resume(Some(2), Some(E), E, kept(5, Some(1)));
        assert_eq!(
            r,
            Resume {
                recovered: true,
                replay_after: Some(2)
            }
        );
        let r = plan_resume(Some(0), Some(E), E, kept(5, Some(1)));
        assert_eq!(r.replay_after, Some(0));
    }

    #[test]
    fn resume_at_head_recovers_with_nothing_to_replay() {
        assert_eq!(
            plan_resume(Some(5), Some(E), E, kept(5, None)),
            Resume {
                recovered: true,
                replay_after: None
            }
        );
    }

    #[test]
    fn trimmed_gap_or_other_epoch_does_not_recover() {
        assert!(!plan_resume(Some(2), Some(E), E, kept(9, Some(4))).recovered);
        assert!(plan_resume(Some(3), Some(E), E, kept(9, Some(4))).recovered);
        assert!(!plan_resume(Some(2), Some("e_2"), E, kept(9, Some(1))).recovered);
        assert!(!plan_resume(Some(2), None, E, kept(9, Some(1))).recovered);
        assert!(!plan_resume(Some(10), Some(E), E, kept(9, Some(1))).recovered);
        assert!(!plan_resume(Some(2), Some(E), E, kept(9, None)).recovered);
    }

    #[test]
    fn the_outbox_holds_unconfirmed_rows_up_to_its_limit() {
        let outbox = |cursor| Some(Outbox { cursor, limit: 100 });
        assert_eq!(trim_ceiling(50, 40, None), 40);
        assert_eq!(
            trim_ceiling(50, 40, outbox(10)),
            10,
            "rows above the cursor stay"
        );
        assert_eq!(
            trim_ceiling(50, 40, outbox(45)),
            40,
            "the history limit still applies below it"
        );
        assert_eq!(
            trim_ceiling(500, 490, outbox(10)),
            400,
            "but never more than the outbox limit"
        );
        assert_eq!(trim_ceiling(5, 40, None), 5);
    }

    #[test]
    fn long_resumes_go_to_http() {
        assert_eq!(replay_route(5, 10, 1000), Replay::Socket { after: 5 });
        assert_eq!(
            replay_route(5, MAX_REPLAY + 1, 10),
            Replay::Http { after: 5 }
        );
        const MIB: u64 = 1024 * 1024;
        assert_eq!(replay_route(5, 2, 4 * MIB), Replay::Socket { after: 5 });
        assert_eq!(
            replay_route(5, 2, 4 * MIB + 1),
            Replay::Http { after: 5 },
            "a turn carries at most 4 MiB"
        );
    }

    #[test]
    fn outbox_counts_the_history_and_reports_what_the_bridge_lost() {
        assert_eq!(outbox_room(1500, 1000), 500);
        assert_eq!(outbox_room(100, 1000), 0, "the history alone is over it");
        let outbox = Some(Outbox {
            cursor: 10,
            limit: 100,
        });
        assert_eq!(dropped_unconfirmed(10, outbox), None);
        assert_eq!(dropped_unconfirmed(25, outbox), Some((11, 25)));
        assert_eq!(dropped_unconfirmed(25, None), None);
    }

    #[test]
    fn floors_and_pages() {
        assert_eq!(count_floor(1500, 1000), 500);
        assert_eq!(count_floor(10, 1000), 0);
        assert_eq!(ttl_cutoff_ms(100_000, 60), 40_000);
        assert_eq!(ttl_cutoff_ms(1, 60), 0);
        assert_eq!(
            Page::parse(None, None).unwrap(),
            Page {
                since: 0,
                limit: 100
            }
        );
        assert_eq!(
            Page::parse(Some("7"), Some("5000")).unwrap(),
            Page {
                since: 7,
                limit: 1000
            }
        );
        assert!(Page::parse(Some("-1"), None).is_err());
    }
}
