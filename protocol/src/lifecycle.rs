//! When a room retires and when its storage may go.
//!
//! A room that nobody is connected to, that holds nothing the bridge still
//! needs and that has had no message for `ROOM_RETIRE_MS` retires: it closes
//! its bridge link, leaves the registry and stops its alarm, so a deployment
//! that saw a million rooms come and go carries only the live ones. Once its
//! history has aged out as well, its storage is deleted; the next message
//! starts it afresh under a new epoch.

/// What the room knows about itself when it considers retiring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quiet {
    /// Open client sockets, on the room and its shards (a bridge link does
    /// not keep a room alive).
    pub clients: usize,
    /// Messages the bridge has yet to confirm.
    pub pending: u64,
    /// When the latest message was stored, if any is known.
    pub last_message_ms: Option<u64>,
}

/// When a room with no clients and nothing pending retires.
pub fn retire_at(last_message_ms: Option<u64>, retire_ms: u64) -> u64 {
    last_message_ms.unwrap_or(0).saturating_add(retire_ms)
}

/// Whether the room retires at `now_ms`.
pub fn may_retire(quiet: Quiet, retire_ms: u64, now_ms: u64) -> bool {
    quiet.clients == 0
        && quiet.pending == 0
        && now_ms >= retire_at(quiet.last_message_ms, retire_ms)
}

/// How soon a room that still has no bridge link asks the registry again.
pub const ANNOUNCE_FIRST_RETRY_MS: u64 = 10_000;
/// The longest a room waits between asking, while its link stays away.
pub const ANNOUNCE_MAX_RETRY_MS: u64 = 300_000;

/// When a registered room with messages for the bridge and no link open
/// announces itself to the registry again, so that the bridge (which
/// closes links that go idle) links it.
///
/// The first message after the link went is announced at once; while no
/// link comes, announcements back off to one per
/// [`ANNOUNCE_MAX_RETRY_MS`], so a deployment whose bridge is down does
/// not turn every publish into a write to the one registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reannounce {
    next_ms: u64,
    retry_ms: u64,
}

impl Reannounce {
    /// Whether to announce at `now_ms`; if so, the next one waits longer.
    pub fn due(&mut self, now_ms: u64) -> bool {
        if now_ms < self.next_ms {
            return false;
        }
        self.retry_ms = match self.retry_ms {
            0 => ANNOUNCE_FIRST_RETRY_MS,
            retry => retry.saturating_mul(2).min(ANNOUNCE_MAX_RETRY_MS),
        };
        self.next_ms = now_ms.saturating_add(self.retry_ms);
        true
    }

    /// A link opened: the next time it goes, announce at once.
    pub fn linked(&mut self) {
        *self = Reannounce::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn announcements_back_off_until_a_link_comes() {
        let mut announce = Reannounce::default();
        assert!(announce.due(1_000));
        assert!(!announce.due(1_000 + ANNOUNCE_FIRST_RETRY_MS - 1));
        assert!(announce.due(1_000 + ANNOUNCE_FIRST_RETRY_MS));
        let second = 1_000 + ANNOUNCE_FIRST_RETRY_MS;
        assert!(!announce.due(second + 2 * ANNOUNCE_FIRST_RETRY_MS - 1));
        assert!(announce.due(second + 2 * ANNOUNCE_FIRST_RETRY_MS));
        for _ in 0..20 {
            let at = announce.next_ms;
            assert!(announce.due(at));
        }
        assert_eq!(announce.retry_ms, ANNOUNCE_MAX_RETRY_MS);
        let now = announce.next_ms - 1;
        assert!(!announce.due(now));
        announce.linked();
        assert!(announce.due(now), "at once after a link");
        assert!(
            !announce.due(now + ANNOUNCE_FIRST_RETRY_MS - 1),
            "then from the first step again"
        );
        assert!(announce.due(now + ANNOUNCE_FIRST_RETRY_MS));
    }

    const WEEK: u64 = 7 * 86_400_000;

    #[test]
    fn only_an_idle_empty_room_with_nothing_pending_retires() {
        let quiet = Quiet {
            clients: 0,
            pending: 0,
            last_message_ms: Some(1_000),
        };
        assert!(!may_retire(quiet, WEEK, 1_000 + WEEK - 1));
        assert!(may_retire(quiet, WEEK, 1_000 + WEEK));
        assert!(!may_retire(
            Quiet {
                clients: 1,
                ..quiet
            },
            WEEK,
            u64::MAX
        ));
        assert!(!may_retire(
            Quiet {
                pending: 3,
                ..quiet
            },
            WEEK,
            u64::MAX
        ));
        assert!(
            may_retire(
                Quiet {
                    last_message_ms: None,
                    ..quiet
                },
                WEEK,
                WEEK
            ),
            "a room whose history aged out has been quiet for longer than that"
        );
    }
}
