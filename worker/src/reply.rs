//! HTTP responses in the shapes of SPEC section 2: JSON bodies, and JSON
//! errors `{"error":{"code","message"}}` whose status follows from the code.

use roomcast_protocol::wire::error_body;
use roomcast_protocol::ErrorCode;
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

/// The error response for `code`.
pub fn error(code: ErrorCode, message: &str) -> Result<Response> {
    Ok(Response::ok(error_body(code, message))?
        .with_status(code.http_status())
        .with_headers(json_headers()))
}
