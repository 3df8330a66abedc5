//! HTTP responses (docs/protocol.md, "HTTP"): JSON bodies, and JSON
//! errors `{"error":{"code","message"}}` whose status follows from the code
//! and which name the code again in the [`ERROR_HEADER`], so a caller can
//! tell roomcast's own refusals from a proxy's.

use roomcast_protocol::wire::{error_body, ERROR_HEADER};
use roomcast_protocol::{ErrorCode, Refusal};
use serde::Serialize;
use worker::{Headers, Response, Result};

fn json_headers() -> Headers {
    let headers = Headers::new();
    // Setting a constant, valid header on a fresh `Headers` cannot fail.
    let _ = headers.set("content-type", "application/json");
    let _ = headers.set("cache-control", "no-store");
    headers
}

/// A JSON response with `status`.
pub fn json<T: Serialize>(status: u16, body: &T) -> Result<Response> {
    let text = serde_json::to_string(body)?;
    Ok(Response::ok(text)?
        .with_status(status)
        .with_headers(json_headers()))
}

/// `204 No Content` with `headers` (a CORS preflight's answer).
pub fn no_content(headers: &[(&str, String)]) -> Result<Response> {
    let fresh = Headers::new();
    for (name, value) in headers {
        fresh.set(name, value)?;
    }
    Ok(Response::empty()?.with_status(204).with_headers(fresh))
}

/// `response` with `extra` headers set. A Durable Object's response
/// carries immutable headers, so they are copied rather than changed.
pub fn with_headers(response: Response, extra: &[(&str, String)]) -> Result<Response> {
    let headers = Headers::new();
    for (name, value) in response.headers().entries() {
        headers.append(&name, &value)?;
    }
    for (name, value) in extra {
        headers.set(name, value)?;
    }
    Ok(response.with_headers(headers))
}

/// The error response for `code`.
pub fn error(code: ErrorCode, message: &str) -> Result<Response> {
    refusal(&Refusal::new(code, message))
}

/// The answer to a refusal: its code's status and body, and `Retry-After`
/// when it says when to try again.
pub fn refusal(refusal: &Refusal) -> Result<Response> {
    let headers = json_headers();
    if let Some(secs) = refusal.retry_after_secs() {
        let _ = headers.set("retry-after", &secs.to_string());
    }
    // Error codes are fixed ASCII names, always a valid header value.
    let _ = headers.set(ERROR_HEADER, refusal.code.as_str());
    Ok(Response::ok(error_body(refusal.code, &refusal.message))?
        .with_status(refusal.code.http_status())
        .with_headers(headers))
}
