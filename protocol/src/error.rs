//! Error and close codes (docs/protocol.md, "Errors" and "Close codes").
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
            ErrorCode::IdConflict => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::UpgradeRequired => 426,
            ErrorCode::RateLimited | ErrorCode::TooManyConnections => 429,
            ErrorCode::Internal => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WebSocket close codes (docs/protocol.md, "Client frames").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn serde_name_matches_as_str() {
        for code in [
            ErrorCode::BadRoom,
            ErrorCode::UpgradeRequired,
            ErrorCode::RateLimited,
            ErrorCode::TooManyConnections,
            ErrorCode::IdConflict,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
