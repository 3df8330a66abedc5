//! The bridge's token on its open links (room links and the registry link).
//!
//! The bridge mints short-lived tokens and sends a fresh one over every open
//! link (`{"type":"auth","token":…}`) rather than reconnecting, which would
//! cost a replay per room. A link is therefore held to the last token it
//! presented: a valid bridge token moves its expiry, anything else leaves
//! the old one in force, and its object's alarm closes it (4001) once that
//! expiry has passed, by the rule client sessions follow
//! ([`expiry_close_ms`]).

use std::borrow::Cow;

use roomcast_protocol::auth::expiry_close_ms;
use roomcast_protocol::wire::ServerFrame;
use roomcast_protocol::{CloseCode, ErrorCode};
use worker::{Result, WebSocket};

use crate::settings::Settings;

/// Checks a token sent on a link, stores its expiry with `store` and answers
/// `auth_ok`; an invalid token, or one without the bridge role, gets a
/// `bad_token` error and changes nothing.
pub fn refresh(
    ws: &WebSocket,
    token: &str,
    settings: &Settings,
    now_ms: u64,
    store: impl FnOnce(u64) -> Result<()>,
) -> Result<()> {
    let frame = match settings.verifier.verify(token, now_ms) {
        Ok(identity) if identity.rights.bridge => {
            store(identity.exp)?;
            ServerFrame::AuthOk { exp: identity.exp }
        }
        Ok(_) => bad_token("links need a token with the bridge role"),
        Err(e) => bad_token(e.to_string()),
    };
    ws.send_with_str(frame.to_json())
}

fn bad_token(message: impl Into<Cow<'static, str>>) -> ServerFrame<'static> {
    ServerFrame::Error {
        room: None,
        code: ErrorCode::BadToken,
        message: message.into(),
        reference: None,
    }
}

/// When a link whose token expires at `exp` is closed. Links belong to no
/// room's policy, so the deployment-wide grace applies.
pub fn close_at_ms(exp: u64, settings: &Settings) -> u64 {
    expiry_close_ms(
        exp,
        settings.config.auth.leeway_secs,
        settings.config.defaults.token_grace_ms,
    )
}

/// Closes an expired link; the socket may already be closing from the
/// other side.
pub fn close_expired(ws: &WebSocket) {
    let code = CloseCode::TokenExpired;
    let _ = ws.close(Some(code.code()), Some(code.reason()));
}
