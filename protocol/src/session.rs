//! One client connection's state and its deadlines: who it is, when it was
//! last heard from, when its token stops being honoured.
//!
//! The worker keeps a [`Session`] in the socket's attachment, which survives
//! hibernation; the rules that decide when the room's alarm must close a
//! connection or warn it live here, as plain arithmetic on its fields.

use serde::{Deserialize, Serialize};

use crate::auth::{expiry_close_ms, Identity};
use crate::policy::Strikes;
use crate::presence::Joined;
use crate::rights::Rights;
use serde_json::value::RawValue;

/// How long before a token's `exp` the `token_expiring` notice goes out.
pub const EXPIRY_NOTICE_MS: u64 = 60_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub conn_id: String,
    pub sub: String,
    /// Token expiry, seconds since the epoch.
    pub exp: u64,
    pub rights: Rights,
    /// What the connection shows as a member: the token's `info` claim at
    /// connect, compact JSON (docs/protocol.md, "Presence").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
    pub connected_ms: u64,
    /// When a frame last came, as of the last time it was saved: the room
    /// saves it only when it has moved by a quarter of the idle timeout, and
    /// keeps the exact time in memory while awake.
    pub last_seen_ms: u64,
    pub strikes: Strikes,
    /// `token_expiring` was sent for the current `exp`.
    pub warned: bool,
    /// The room has closed this socket (its lifetime is already counted).
    pub closed: bool,
}

/// The deadlines of a session, against the room's timing settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub idle_timeout_ms: u64,
    pub leeway_secs: u64,
    pub token_grace_ms: u64,
}

/// Why the alarm closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    Idle,
    TokenExpired,
}

impl Session {
    /// This connection as the room's presence counts it.
    pub fn joined(&self, room: &str) -> Joined {
        Joined {
            conn_id: self.conn_id.clone(),
            sub: self.sub.clone(),
            shown: self.rights.can_see_presence(room),
            info: self
                .info
                .as_deref()
                .and_then(|i| RawValue::from_string(i.to_owned()).ok()),
        }
    }

    pub fn new(conn_id: String, identity: Identity, now_ms: u64) -> Session {
        Session {
            conn_id,
            sub: identity.sub,
            exp: identity.exp,
            rights: identity.rights,
            info: identity.info,
            connected_ms: now_ms,
            last_seen_ms: now_ms,
            strikes: Strikes::default(),
            warned: false,
            closed: false,
        }
    }

    /// When the token stops being honoured.
    pub fn expiry_close_ms(&self, timing: &Timing) -> u64 {
        expiry_close_ms(self.exp, timing.leeway_secs, timing.token_grace_ms)
    }

    /// When the `token_expiring` notice is due, unless it was sent.
    pub fn notice_due_ms(&self) -> Option<u64> {
        (!self.warned).then(|| {
            self.exp
                .saturating_mul(1000)
                .saturating_sub(EXPIRY_NOTICE_MS)
        })
    }

    /// Lifetime in seconds, for the connection-uptime histogram.
    pub fn lifetime_secs(&self, now_ms: u64) -> f64 {
        now_ms.saturating_sub(self.connected_ms) as f64 / 1000.0
    }

    /// Whether the connection must be closed at `now_ms`; `heard_ms` is the
    /// latest sign of life (a frame, or a `ping` the runtime answered).
    pub fn due(&self, heard_ms: u64, timing: &Timing, now_ms: u64) -> Option<Due> {
        let heard = self.last_seen_ms.max(heard_ms);
        if now_ms >= heard.saturating_add(timing.idle_timeout_ms) {
            Some(Due::Idle)
        } else if now_ms >= self.expiry_close_ms(timing) {
            Some(Due::TokenExpired)
        } else {
            None
        }
    }

    /// The earliest moment the alarm has something to do for this session.
    pub fn next_deadline(&self, heard_ms: u64, timing: &Timing) -> u64 {
        let idle = self
            .last_seen_ms
            .max(heard_ms)
            .saturating_add(timing.idle_timeout_ms);
        idle.min(self.expiry_close_ms(timing))
            .min(self.notice_due_ms().unwrap_or(u64::MAX))
    }

    /// Whether a frame at `now_ms` moved the last sign of life far enough
    /// that the attachment should be saved: a room that is evicted then
    /// underestimates the last frame by at most a quarter of the timeout.
    pub fn seen_needs_saving(&self, now_ms: u64, timing: &Timing) -> bool {
        now_ms.saturating_sub(self.last_seen_ms) >= timing.idle_timeout_ms / 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const TIMING: Timing = Timing {
        idle_timeout_ms: 90_000,
        leeway_secs: 30,
        token_grace_ms: 10_000,
    };

    fn session(exp: u64) -> Session {
        Session::new(
            "c".into(),
            Identity {
                sub: "s".into(),
                exp,
                rights: Rights::default(),
                info: None,
            },
            1_000_000,
        )
    }

    #[test]
    fn idle_then_expired() {
        let s = session(10_000);
        assert_eq!(s.due(0, &TIMING, 1_089_999), None);
        assert_eq!(s.due(0, &TIMING, 1_090_000), Some(Due::Idle));
        assert_eq!(s.due(1_050_000, &TIMING, 1_090_000), None, "a ping counts");
        assert_eq!(
            s.due(9_999_000, &TIMING, 10_040_000),
            Some(Due::TokenExpired),
            "exp + leeway + grace"
        );
    }

    #[test]
    fn the_next_deadline_is_the_earliest() {
        let s = session(2_000);
        assert_eq!(s.next_deadline(0, &TIMING), 1_090_000);
        let s = session(1_050);
        assert_eq!(
            s.next_deadline(0, &TIMING),
            990_000,
            "the notice, a minute before exp"
        );
        let mut warned = s.clone();
        warned.warned = true;
        assert_eq!(warned.next_deadline(0, &TIMING), 1_090_000);
    }

    #[test]
    fn the_last_frame_is_saved_every_quarter_timeout() {
        let s = session(10_000);
        assert!(!s.seen_needs_saving(1_022_499, &TIMING));
        assert!(s.seen_needs_saving(1_022_500, &TIMING));
    }
}
