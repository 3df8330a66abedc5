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
    /// Open sockets: clients and bridge links alike keep a room alive.
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

#[cfg(test)]
mod tests {
    use super::*;

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
