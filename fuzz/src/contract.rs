//! The promises every parser of untrusted input keeps, as assertions.
//!
//! A refusal must become an answer: the worker turns a [`Rejection`] into an
//! `error` frame (WebSocket) or an `{"error":{...}}` body (HTTP), so both are
//! built here and read back as a client reads them. An accepted message must
//! fit the limits and survive the trip to every reader: the room broadcasts
//! it as a `message` frame, which the bridge parses back.

use std::borrow::Cow;

use roomcast_protocol::policy::MAX_DEPTH;
use roomcast_protocol::trace::is_traceparent;
use roomcast_protocol::wire::{
    error_body, parse_server_frame, Draft, Message, Origin, Rejection, ServerFrame, MAX_ID_LEN,
    MAX_REF_LEN,
};
use roomcast_protocol::ErrorCode;
use serde_json::Value;

/// A refused frame or body: one of the codes a parser may give, and an answer
/// on both transports.
pub fn refused(rejection: &Rejection) {
    assert!(
        matches!(rejection.code, ErrorCode::BadFormat | ErrorCode::TooLarge),
        "a parser answered {:?}",
        rejection.code
    );
    if let Some(reference) = &rejection.reference {
        assert!(
            reference.chars().count() <= MAX_REF_LEN,
            "ref of {} chars echoed",
            reference.chars().count()
        );
    }
    error_frame(
        rejection.code,
        &rejection.message,
        rejection.reference.as_deref(),
    );
    http_error(rejection.code, &rejection.message);
}

/// The `error` frame for a refusal reads back with the same code, message
/// and `ref`.
pub fn error_frame(code: ErrorCode, message: &str, reference: Option<&str>) {
    assert!(!message.is_empty(), "{code} without a message");
    let text = ServerFrame::Error {
        code,
        message: Cow::Borrowed(message),
        reference: reference.map(Cow::Borrowed),
    }
    .to_json();
    match parse_server_frame(&text) {
        Ok(ServerFrame::Error {
            code: back,
            message: back_message,
            reference: back_reference,
        }) => {
            assert_eq!(back, code, "{text}");
            assert_eq!(back_message, message, "{text}");
            assert_eq!(back_reference.as_deref(), reference, "{text}");
        }
        other => panic!("error frame {text} reads back as {other:?}"),
    }
}

/// The HTTP error body for a refusal is JSON carrying the code, and its
/// status is a client error.
pub fn http_error(code: ErrorCode, message: &str) {
    assert!(!message.is_empty(), "{code} without a message");
    assert!((400..500).contains(&code.http_status()), "{code}");
    let body = error_body(code, message);
    let value: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{body}: {e}"));
    assert_eq!(value["error"]["code"], code.as_str(), "{body}");
    assert_eq!(value["error"]["message"], message, "{body}");
}

/// An accepted message: its key, trace and data within the limits (`data`
/// at most `max_data_bytes` once serialized, as stored), and its `message`
/// frame readable by the bridge with nothing changed.
pub fn accepted(draft: &Draft, max_data_bytes: usize) {
    if let Some(id) = &draft.id {
        assert!(!id.is_empty() && id.len() <= MAX_ID_LEN, "id {id:?}");
    }
    if let Some(trace) = &draft.trace {
        assert!(is_traceparent(trace), "trace {trace:?}");
    }
    let data = draft.data.get();
    assert!(
        data.len() <= max_data_bytes,
        "{} bytes of data accepted under a limit of {max_data_bytes}: {data}",
        data.len()
    );
    // Portable JSON: the strictest common reader (`serde_json::Value`, no
    // arbitrary precision) takes it too.
    if let Err(e) = serde_json::from_str::<Value>(data) {
        panic!("{data}: {e}");
    }
    assert!(depth(data) <= MAX_DEPTH, "{data}");
    broadcast(draft);
}

/// Nesting depth of JSON text (scalars 0, `[]` and `{}` 1), by a scanner of
/// the harness's own: a second opinion on the parser's limit.
fn depth(json: &str) -> usize {
    let (mut level, mut deepest) = (0usize, 0usize);
    let mut chars = json.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                // Skip the string, escapes included.
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '[' | '{' => {
                level += 1;
                deepest = deepest.max(level);
            }
            ']' | '}' => level -= 1,
            _ => {}
        }
    }
    deepest
}

fn broadcast(draft: &Draft) {
    let message = Message {
        room: "fuzz.room".into(),
        id: draft.id.clone().unwrap_or_else(|| "m_1".into()),
        seq: 1,
        ts: 1,
        sender: "fuzz".into(),
        origin: Origin::Ws,
        data: draft.data.clone(),
        trace: draft.trace.clone(),
    };
    let text = ServerFrame::Message(Cow::Borrowed(&message)).to_json();
    match parse_server_frame(&text) {
        Ok(ServerFrame::Message(back)) => {
            assert_eq!(back.data.get(), message.data.get(), "{text}");
            assert_eq!((&back.id, &back.trace), (&message.id, &message.trace));
        }
        other => panic!("message frame {text} reads back as {other:?}"),
    }
}
