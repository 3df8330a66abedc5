//! One client connection's state, kept in its WebSocket attachment: who it
//! is, its rate bucket, when it was last heard from.

use roomcast_protocol::auth::{expiry_close_ms, Identity};
use roomcast_protocol::policy::Strikes;
use roomcast_protocol::rate::Bucket;
use roomcast_protocol::rights::Rights;
use serde::{Deserialize, Serialize};

use crate::attachment::Attachment;

/// How long before a token's `exp` the `token_expiring` notice goes out.
pub const EXPIRY_NOTICE_MS: u64 = 60_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub conn_id: String,
    pub sub: String,
    /// Token expiry, seconds since the epoch.
    pub exp: u64,
    pub rights: Rights,
    pub connected_ms: u64,
    pub last_seen_ms: u64,
    pub bucket: Bucket,
    pub strikes: Strikes,
    /// `token_expiring` was sent for the current `exp`.
    pub warned: bool,
    /// The room has closed this socket (its lifetime is already counted).
    pub closed: bool,
}

impl Attachment for Session {}

impl Session {
    pub fn new(conn_id: String, identity: Identity, burst: u32, now_ms: u64) -> Session {
        Session {
            conn_id,
            sub: identity.sub,
            exp: identity.exp,
            rights: identity.rights,
            connected_ms: now_ms,
            last_seen_ms: now_ms,
            bucket: Bucket::new(burst, now_ms),
            strikes: Strikes::default(),
            warned: false,
            closed: false,
        }
    }

    /// When the token stops being honoured (SPEC section 8).
    pub fn expiry_close_ms(&self, leeway_secs: u64, grace_ms: u64) -> u64 {
        expiry_close_ms(self.exp, leeway_secs, grace_ms)
    }

    /// When the `token_expiring` notice is due, unless it was sent.
    pub fn notice_due_ms(&self) -> Option<u64> {
        (!self.warned).then(|| (self.exp * 1000).saturating_sub(EXPIRY_NOTICE_MS))
    }

    /// Lifetime in seconds, for the connection-uptime histogram.
    pub fn lifetime_secs(&self, now_ms: u64) -> f64 {
        now_ms.saturating_sub(self.connected_ms) as f64 / 1000.0
    }
}
