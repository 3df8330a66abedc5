//! Error and close codes (docs/protocol.md, "Errors" and "Close codes"),
//! and [`Refusal`], the one value every refusal travels as.
//!
//! One enum for every code a client can see, so the HTTP status, the JSON
//! `code` string and the WebSocket `error` frame can never disagree.

use serde::{Deserialize, Serialize};

/// A machine-readable error code, as it appears in `{"error":{"code":...}}`
/// bodies and `error` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRoom,
    BadRequest,
    Unauthorized,
    Forbidden,
    BadOrigin,
    UpgradeRequired,
    NotFound,
    MethodNotAllowed,
    BadFormat,
    TooLarge,
    RateLimited,
    TooManyConnections,
    IdConflict,
    BadToken,
    Internal,
    /// A multiplexed connection subscribing past its room limit.
    TooManyRooms,
    /// A multiplexed connection publishing to a room it is not subscribed to.
    NotSubscribed,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRoom => "bad_room",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::BadOrigin => "bad_origin",
            ErrorCode::UpgradeRequired => "upgrade_required",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::BadFormat => "bad_format",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::IdConflict => "id_conflict",
            ErrorCode::BadToken => "bad_token",
            ErrorCode::Internal => "internal",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::NotSubscribed => "not_subscribed",
        }
    }

    /// The HTTP status that carries this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRoom | ErrorCode::BadRequest | ErrorCode::BadFormat => 400,
            ErrorCode::Unauthorized | ErrorCode::BadToken => 401,
            ErrorCode::Forbidden | ErrorCode::BadOrigin => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::IdConflict | ErrorCode::NotSubscribed => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::UpgradeRequired => 426,
            ErrorCode::RateLimited | ErrorCode::TooManyConnections | ErrorCode::TooManyRooms => 429,
            ErrorCode::Internal => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WebSocket close codes (docs/protocol.md, "Close codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u16)]
pub enum CloseCode {
    Normal = 1000,
    GoingAway = 1001,
    PolicyViolation = 1008,
    TooBig = 1009,
    Internal = 1011,
    TokenExpired = 4001,
    RightsRevoked = 4003,
    IdleTimeout = 4008,
    Superseded = 4009,
    /// Bridge links only: the room retired (idle, nothing pending); the
    /// registry announces it again when it has a message.
    Retired = 4010,
    RateLimited = 4029,
}

impl CloseCode {
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The reason text sent with the close frame.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::GoingAway => "going away",
            CloseCode::PolicyViolation => "repeated policy violations",
            CloseCode::TooBig => "frame far over the size limit",
            CloseCode::Internal => "internal error",
            CloseCode::TokenExpired => "token expired",
            CloseCode::RightsRevoked => "rights revoked",
            CloseCode::IdleTimeout => "no heartbeat",
            CloseCode::Superseded => "superseded",
            CloseCode::Retired => "room retired",
            CloseCode::RateLimited => "rate limit exceeded",
        }
    }
}

/// Why roomcast refused something, from the rule that decided it to the
/// answer that says so (an HTTP error, an `error` frame, a close): one
/// value, so that a code never travels without its message, the client's
/// `ref`, when to try again, or the close the connection earned. Shards
/// receive it from their room as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    /// The `ref` of the client's frame that was refused.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// When trying again may succeed (the rate budget's refusals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// The close the connection earned with it: a frame far over the size
    /// limit, a client that kept sending over its budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close: Option<CloseCode>,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
            reference: None,
            retry_after_ms: None,
            close: None,
        }
    }

    /// Over a rate budget: try again after `retry_after_ms`; `close` when
    /// the connection kept sending over it for `RATE_STRIKES` seconds.
    pub fn rate_limited(retry_after_ms: u64, close: bool) -> Refusal {
        Refusal {
            retry_after_ms: Some(retry_after_ms),
            close: close.then_some(CloseCode::RateLimited),
            ..Refusal::new(ErrorCode::RateLimited, "slow down: over the rate limit")
        }
    }

    pub fn with_ref(mut self, reference: Option<String>) -> Refusal {
        self.reference = reference;
        self
    }

    /// `Retry-After` in whole seconds, at least one.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after_ms.map(|ms| ms.div_ceil(1000).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn a_refusal_says_when_to_retry_in_whole_seconds_and_travels_whole() {
        assert_eq!(Refusal::rate_limited(1, false).retry_after_secs(), Some(1));
        assert_eq!(
            Refusal::rate_limited(1001, false).retry_after_secs(),
            Some(2)
        );
        assert_eq!(
            Refusal::new(ErrorCode::BadFormat, "x").retry_after_secs(),
            None
        );
        let closing = Refusal::rate_limited(10, true).with_ref(Some("r1".into()));
        assert_eq!(closing.close, Some(CloseCode::RateLimited));
        assert_eq!(Refusal::rate_limited(10, false).close, None);
        let json = serde_json::to_string(&closing).unwrap();
        assert_eq!(serde_json::from_str::<Refusal>(&json).unwrap(), closing);
    }

    #[test]
    fn serde_name_matches_as_str() {
        for code in [
            ErrorCode::BadRoom,
            ErrorCode::UpgradeRequired,
            ErrorCode::RateLimited,
            ErrorCode::TooManyConnections,
            ErrorCode::IdConflict,
            ErrorCode::TooManyRooms,
            ErrorCode::NotSubscribed,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
