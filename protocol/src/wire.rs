//! Wire formats of docs/protocol.md, "HTTP" and "Client frames": client frames, server frames and the
//! JSON bodies of the HTTP API.
//!
//! Parsing is strict about the fields roomcast reads and lenient about the
//! rest (unknown fields are ignored), and every failure carries the error code
//! the client will see, plus the client's `ref` when it could be read.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::draft::{Draft, Origin};
use crate::error::{CloseCode, ErrorCode, Refusal};
use crate::policy::{self, SizeCheck, MAX_DEPTH};
use crate::stats::StatsReport;
use crate::trace::is_traceparent;

/// Longest accepted `ref` and idempotency key.
pub const MAX_REF_LEN: usize = 64;
pub const MAX_ID_LEN: usize = 128;
/// Most messages in one batch `POST`.
pub const MAX_BATCH: usize = 500;

/// A parsed client frame.
#[derive(Debug, Clone)]
pub enum ClientFrame {
    Publish {
        draft: Draft,
        reference: Option<String>,
    },
    Auth {
        token: String,
    },
}

/// The fields roomcast reads from a client frame or a message of an HTTP
/// body, each still as its raw JSON text: they are checked one by one (for
/// a precise error) and `data` is kept verbatim, never built into a tree.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(rename = "ref", borrow, default)]
    reference: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    trace: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    token: Option<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Option<&'a RawValue>,
    #[serde(borrow, default)]
    kafka: Option<&'a RawValue>,
}

/// Keeps a field written as `null` (`Some("null")`), where serde's `Option`
/// would read it as absent: `"data": null` is a message, a missing `data` is not.
fn present<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(de).map(Some)
}

impl<'a> Fields<'a> {
    /// Reads a JSON object's fields; `what` names it in errors.
    fn read(text: &'a str, what: &str) -> Result<Fields<'a>, Refusal> {
        serde_json::from_str(text).map_err(|e| {
            let object = text.trim_start().starts_with('{');
            let json = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
            let message = if json && !object {
                format!("{what} must be a JSON object")
            } else {
                format!("{what} is not JSON: {e}")
            };
            Refusal::new(ErrorCode::BadFormat, message)
        })
    }

    /// The optional `ref`, cut to the bytes an accepted one may have, for
    /// errors about the rest.
    fn reference_for_errors(&self) -> Option<String> {
        let text = string(self.reference?)?;
        let mut end = text.len().min(MAX_REF_LEN);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Some(text[..end].to_owned())
    }
}

/// A raw JSON value as a string, if it is one (`null` and other types: none).
fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    serde_json::from_str::<Cow<'_, str>>(raw.get()).ok()
}

/// A field that may be absent (serde reads a `null` one as absent too),
/// else must be a string that `ok` accepts; `wrong` describes what it must
/// be.
fn optional_string(
    raw: Option<&RawValue>,
    ok: impl Fn(&str) -> bool,
    wrong: impl FnOnce() -> String,
) -> Result<Option<String>, Refusal> {
    match raw {
        None => Ok(None),
        Some(raw) => match string(raw) {
            Some(text) if ok(&text) => Ok(Some(text.into_owned())),
            _ => Err(Refusal::new(ErrorCode::BadFormat, wrong())),
        },
    }
}

/// Parses one text frame under the size limit `max_bytes`.
pub fn parse_client_frame(text: &str, max_bytes: usize) -> Result<ClientFrame, Refusal> {
    if let Err(rejection) = check_size(text.len(), max_bytes) {
        // Reading a frame up to four times the limit for its `ref` is
        // bounded, and lets the publisher tell which of its frames it was.
        let reference = if rejection.close.is_some() {
            None
        } else {
            Fields::read(text, "a frame")
                .ok()
                .and_then(|f| f.reference_for_errors())
        };
        return Err(rejection.with_ref(reference));
    }
    let fields = Fields::read(text, "a frame")?;
    let reference = fields.reference_for_errors();
    let kind = match fields.kind {
        None => Err(Refusal::new(ErrorCode::BadFormat, "frame has no type")),
        Some(raw) => {
            string(raw).ok_or_else(|| Refusal::new(ErrorCode::BadFormat, "type must be a string"))
        }
    };
    let parsed = kind.and_then(|kind| match kind.as_ref() {
        "publish" => parse_publish(&fields),
        "auth" => match fields.token.and_then(string) {
            Some(token) => Ok(ClientFrame::Auth {
                token: token.into_owned(),
            }),
            None => Err(Refusal::new(
                ErrorCode::BadFormat,
                "auth needs a string token",
            )),
        },
        other => Err(Refusal::new(
            ErrorCode::BadFormat,
            format!("unknown frame type {other:?}"),
        )),
    });
    parsed.map_err(|r| r.with_ref(reference))
}

fn parse_publish(fields: &Fields<'_>) -> Result<ClientFrame, Refusal> {
    let reference = optional_string(
        fields.reference,
        |r| r.len() <= MAX_REF_LEN,
        || format!("ref must be a string of at most {MAX_REF_LEN} bytes"),
    )?;
    let draft = parse_draft(fields)?;
    Ok(ClientFrame::Publish { draft, reference })
}

/// Reads `data` and the optional idempotency key `id` and `trace` of one
/// message. `data` is kept as the publisher wrote it but for the whitespace
/// between its tokens ([`policy::compact`]); its nesting is measured by
/// scanning the text, never by building a tree of it.
fn parse_draft(fields: &Fields<'_>) -> Result<Draft, Refusal> {
    let id = optional_string(
        fields.id,
        |id| !id.is_empty() && id.len() <= MAX_ID_LEN,
        || format!("id must be a non-empty string of at most {MAX_ID_LEN} bytes"),
    )?;
    let trace = optional_string(fields.trace, is_traceparent, || {
        "trace must be a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)".into()
    })?;
    let data = fields
        .data
        .ok_or_else(|| Refusal::new(ErrorCode::BadFormat, "publish needs data"))?;
    if policy::depth(data.get()) > MAX_DEPTH {
        return Err(Refusal::new(
            ErrorCode::BadFormat,
            format!("data is nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    if !policy::portable(data.get()) {
        return Err(Refusal::new(
            ErrorCode::BadFormat,
            "data must read the same in every JSON reader: numbers within double range, no unpaired surrogate escapes",
        ));
    }
    let data = match policy::compact(data.get()) {
        Cow::Borrowed(_) => data.to_owned(),
        // Removing whitespace between tokens leaves valid JSON.
        Cow::Owned(compact) => RawValue::from_string(compact)
            .map_err(|e| Refusal::new(ErrorCode::BadFormat, format!("data: {e}")))?,
    };
    Ok(Draft {
        data,
        id,
        trace,
        kafka: None,
    })
}

pub(crate) fn check_size(len: usize, max_bytes: usize) -> Result<(), Refusal> {
    match policy::check_size(len, max_bytes) {
        SizeCheck::Ok => Ok(()),
        over => Err(Refusal {
            close: (over == SizeCheck::FarTooLarge).then_some(CloseCode::TooBig),
            ..Refusal::new(
                ErrorCode::TooLarge,
                format!("{len} bytes is over the limit of {max_bytes}"),
            )
        }),
    }
}

/// Parses the body of `POST /v1/rooms/{room}/messages`: `{"data","id"?}` or
/// `{"messages":[...]}`. Returns the drafts and whether it was the batch form.
pub fn parse_publish_body(body: &str, max_bytes: usize) -> Result<(Vec<Draft>, bool), Refusal> {
    let fields = Fields::read(body, "the body")?;
    let Some(messages) = fields.messages else {
        return Ok((vec![parse_http_draft(&fields, max_bytes)?], false));
    };
    let items: Vec<&RawValue> = serde_json::from_str(messages.get())
        .ok()
        .filter(|items: &Vec<&RawValue>| !items.is_empty() && items.len() <= MAX_BATCH)
        .ok_or_else(|| {
            Refusal::new(
                ErrorCode::BadFormat,
                format!("messages must be a list of 1 to {MAX_BATCH} messages"),
            )
        })?;
    let drafts = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            Fields::read(item.get(), "each message")
                .and_then(|fields| parse_http_draft(&fields, max_bytes))
                .map_err(|r| Refusal {
                    message: format!("messages[{i}]: {}", r.message),
                    ..r
                })
        })
        .collect::<Result<_, _>>()?;
    Ok((drafts, true))
}

fn parse_http_draft(fields: &Fields<'_>, max_bytes: usize) -> Result<Draft, Refusal> {
    let mut draft = parse_draft(fields)?;
    check_size(draft.data.get().len(), max_bytes)?;
    if let Some(raw) = fields.kafka.filter(|raw| raw.get() != "null") {
        draft.kafka = Some(serde_json::from_str(raw.get()).map_err(|_| {
            Refusal::new(
                ErrorCode::BadFormat,
                "kafka must be {\"topic\":string,\"partition\":int,\"offset\":int}",
            )
        })?);
    }
    Ok(draft)
}

/// A stored, broadcast message: the `message` frame without `type`, and the
/// value of the Kafka record (docs/bridge.md, "Kafka mapping").
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    pub room: String,
    pub id: String,
    pub seq: u64,
    pub ts: u64,
    pub sender: String,
    pub origin: Origin,
    pub data: Box<RawValue>,
    /// The publisher's W3C `traceparent`, when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// The outcome of one publish, as acked to the publisher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub id: String,
    pub seq: u64,
    pub duplicate: bool,
}

/// The token-bucket parameters announced in `welcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateInfo {
    pub per_sec: u32,
    pub burst: u32,
}

/// The first frame on every connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub room: String,
    pub conn_id: String,
    pub epoch: String,
    pub head: u64,
    pub recovered: bool,
    pub heartbeat_ms: u64,
    pub max_message_bytes: usize,
    pub rate: RateInfo,
    pub exp: u64,
    /// Bridge links only: the highest seq the bridge has confirmed to Kafka.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<u64>,
    /// The missed messages were too many to replay on the socket: page
    /// `GET /messages?since=<since>` until `head`; live messages after
    /// `head` arrive on this socket as usual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUp>,
}

/// Where a resuming client pages its missed messages from (see [`Welcome`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatchUp {
    pub since: u64,
    pub until: u64,
}

/// Frames the server sends, tagged by `type`: to clients, and to the bridge
/// on its room and registry links.
///
/// The room writes them from borrowed values; the bridge and the tests read
/// them back with [`parse_server_frame`] into owned ones, so both sides share
/// this one definition.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Welcome(Cow<'a, Welcome>),
    Message(Cow<'a, Message>),
    Ack {
        /// On a multiplexed connection, the room the publish went to.
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<Cow<'a, str>>,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<Cow<'a, str>>,
        #[serde(flatten)]
        receipt: Cow<'a, Receipt>,
    },
    Error {
        /// On a multiplexed connection, the room the refused frame named.
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<Cow<'a, str>>,
        code: ErrorCode,
        message: Cow<'a, str>,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<Cow<'a, str>>,
    },
    AuthOk {
        exp: u64,
    },
    TokenExpiring {
        exp: u64,
    },
    /// The room's counters, every 10 s on the bridge link.
    Stats(Cow<'a, StatsReport>),
    /// Registry link: a room this bridge instance relays.
    Room(Cow<'a, Registration>),
    /// Room link: what changed in the room's presence at one flush.
    Presence(Cow<'a, PresenceEvent>),
}

/// One presence flush of a room, on its bridge link: numbered per link
/// (`pseq`) so the bridge can acknowledge it, and kept by the room until
/// it is. The member lists and the occupancy are carried as raw JSON: the
/// bridge passes them to the broker as the room wrote them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PresenceEvent {
    pub room: String,
    pub pseq: u64,
    /// When the room flushed, in ms since the epoch.
    pub at: u64,
    pub joins: Box<RawValue>,
    pub leaves: Box<RawValue>,
    pub occupancy: Box<RawValue>,
    /// Events before this one were dropped unacknowledged (the room keeps
    /// a bounded number).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gap: bool,
}

/// A room as the registry knows it: sent by the room when it needs relaying,
/// and announced to the bridge instance that owns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub room: String,
    /// Messages the room holds that Kafka has not confirmed.
    pub pending: u64,
}

impl ServerFrame<'_> {
    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames contain only serializable data")
    }
}

/// Reads a frame the server sent.
///
/// Two steps instead of serde's internally tagged enums: those buffer the
/// whole frame into an intermediate tree, which cannot hold a message's raw
/// `data`. Here the `type` is read first and the frame is then read once,
/// straight into its variant.
pub fn parse_server_frame(text: &str) -> Result<ServerFrame<'static>, serde_json::Error> {
    #[derive(Deserialize)]
    struct Tag<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
    }
    #[derive(Deserialize)]
    struct Exp {
        exp: u64,
    }
    #[derive(Deserialize)]
    struct Refused {
        #[serde(default)]
        room: Option<String>,
        code: ErrorCode,
        message: String,
        #[serde(rename = "ref", default)]
        reference: Option<String>,
    }
    #[derive(Deserialize)]
    struct Acked {
        #[serde(default)]
        room: Option<String>,
        #[serde(rename = "ref", default)]
        reference: Option<String>,
        #[serde(flatten)]
        receipt: Receipt,
    }
    let tag: Tag<'_> = serde_json::from_str(text)?;
    Ok(match tag.kind.as_ref() {
        "welcome" => ServerFrame::Welcome(Cow::Owned(serde_json::from_str(text)?)),
        "message" => ServerFrame::Message(Cow::Owned(serde_json::from_str(text)?)),
        "ack" => {
            let ack: Acked = serde_json::from_str(text)?;
            ServerFrame::Ack {
                room: ack.room.map(Cow::Owned),
                reference: ack.reference.map(Cow::Owned),
                receipt: Cow::Owned(ack.receipt),
            }
        }
        "error" => {
            let error: Refused = serde_json::from_str(text)?;
            ServerFrame::Error {
                room: error.room.map(Cow::Owned),
                code: error.code,
                message: Cow::Owned(error.message),
                reference: error.reference.map(Cow::Owned),
            }
        }
        "auth_ok" => ServerFrame::AuthOk {
            exp: serde_json::from_str::<Exp>(text)?.exp,
        },
        "token_expiring" => ServerFrame::TokenExpiring {
            exp: serde_json::from_str::<Exp>(text)?.exp,
        },
        "stats" => ServerFrame::Stats(Cow::Owned(serde_json::from_str(text)?)),
        "room" => ServerFrame::Room(Cow::Owned(serde_json::from_str(text)?)),
        "presence" => ServerFrame::Presence(Cow::Owned(serde_json::from_str(text)?)),
        other => {
            return Err(serde::de::Error::unknown_variant(
                other,
                &[
                    "welcome",
                    "message",
                    "ack",
                    "error",
                    "auth_ok",
                    "token_expiring",
                    "stats",
                    "room",
                    "presence",
                ],
            ))
        }
    })
}

/// A frame from the bridge on a room link or the registry link (docs/internals.md,
/// "Bridge links"), written by the bridge and read by the worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BridgeFrame {
    /// Kafka has acknowledged every relayed message up to `seq` (room links).
    BridgeAck { seq: u64 },
    /// A fresh token for the link, so it outlives the token it opened with.
    Auth { token: String },
    /// The broker has stored the presence event `pseq` and every one
    /// before it (room links).
    PresenceAck { pseq: u64 },
}

impl BridgeFrame {
    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("bridge frames contain only serializable data")
    }
}

/// Parses one text frame from a bridge link.
pub fn parse_bridge_frame(text: &str) -> Result<BridgeFrame, Refusal> {
    serde_json::from_str(text).map_err(|e| {
        Refusal::new(
            ErrorCode::BadFormat,
            format!("expected {{\"type\":\"bridge_ack\",\"seq\":N}}, {{\"type\":\"presence_ack\",\"pseq\":N}} or {{\"type\":\"auth\",\"token\":\"...\"}}: {e}"),
        )
    })
}

/// The header every HTTP error from roomcast carries, with the same code as
/// its body. A proxy, a load balancer or a wrong path prefix can answer 4xx
/// too, with any body; only this header tells a caller (the bridge deciding
/// between dead-lettering a record and waiting out an outage) that roomcast
/// itself refused the request.
pub const ERROR_HEADER: &str = "x-roomcast-error";

/// The JSON body of every HTTP error: `{"error":{"code","message"}}`.
pub fn error_body(code: ErrorCode, message: &str) -> String {
    serde_json::json!({"error": {"code": code, "message": message}}).to_string()
}

/// The body of `GET /v1/rooms/{room}/messages`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryPage {
    pub room: String,
    pub epoch: String,
    pub head: u64,
    pub messages: Vec<Message>,
    /// More messages after the last one returned: fetch again from its seq.
    pub truncated: bool,
    /// Lowest seq still stored, so a client can tell that `since` fell into a
    /// trimmed gap.
    pub oldest: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use serde_json::Value;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn parse(v: Value) -> Result<ClientFrame, Refusal> {
        parse_client_frame(&v.to_string(), 1000)
    }

    #[test]
    fn publish_frames() {
        let f = parse(json!({"type":"publish","data":{"a":[1,2]},"ref":"r1","id":"k","extra":1}))
            .unwrap();
        let ClientFrame::Publish { draft, reference } = f else {
            panic!()
        };
        assert_eq!(draft.data.get(), r#"{"a":[1,2]}"#);
        assert_eq!(
            (draft.id.as_deref(), reference.as_deref()),
            (Some("k"), Some("r1"))
        );
        assert_eq!(draft.trace, None);
    }

    #[test]
    fn trace_context_is_carried_or_refused() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let Ok(ClientFrame::Publish { draft, .. }) =
            parse(json!({"type":"publish","data":1,"trace":tp}))
        else {
            panic!()
        };
        assert_eq!(draft.trace.as_deref(), Some(tp));
        for bad in [json!("nope"), json!(7), json!(tp.to_uppercase())] {
            let r = parse(json!({"type":"publish","data":1,"trace":bad})).unwrap_err();
            assert_eq!(r.code, ErrorCode::BadFormat, "{bad}");
        }
        let (drafts, _) = parse_publish_body(
            &json!({"messages":[{"data":1,"trace":tp},{"data":2}]}).to_string(),
            100,
        )
        .unwrap();
        assert_eq!(drafts[0].trace.as_deref(), Some(tp));
        assert_eq!(drafts[1].trace, None);
    }

    #[test]
    fn bad_frames_keep_their_ref() {
        let r = parse(json!({"type":"publish","ref":"r2"})).unwrap_err();
        assert_eq!(
            (r.code, r.reference.as_deref()),
            (ErrorCode::BadFormat, Some("r2"))
        );
        for bad in [
            json!([1]),
            json!({"data":1}),
            json!({"type":7}),
            json!({"type":"nope"}),
            json!({"type":"publish","data":1,"id":5}),
            json!({"type":"publish","data":1,"id":""}),
            json!({"type":"publish","data":1,"id":"i".repeat(MAX_ID_LEN + 1)}),
            json!({"type":"publish","data":1,"ref":"r".repeat(MAX_REF_LEN + 1)}),
            json!({"type":"auth"}),
        ] {
            assert_eq!(
                parse(bad.clone()).unwrap_err().code,
                ErrorCode::BadFormat,
                "{bad}"
            );
        }
        for (text, says) in [
            ("{", "a frame is not JSON"),
            ("ping!", "a frame is not JSON"),
            ("7", "a frame must be a JSON object"),
            (r#""publish""#, "a frame must be a JSON object"),
            (r#"{"type":1,"type":2}"#, "a frame is not JSON"),
        ] {
            let r = parse_client_frame(text, 100).unwrap_err();
            assert_eq!(r.code, ErrorCode::BadFormat);
            assert!(r.message.starts_with(says), "{text}: {}", r.message);
        }
    }

    #[test]
    fn null_optional_fields_are_absent() {
        let Ok(ClientFrame::Publish { draft, reference }) =
            parse(json!({"type":"publish","data":1,"ref":null,"id":null,"trace":null}))
        else {
            panic!("null ref, id and trace are a publish")
        };
        assert_eq!((reference, draft.id, draft.trace), (None, None, None));
    }

    #[test]
    fn null_data_is_a_message_and_unportable_data_is_refused() {
        match parse(json!({"type":"publish","data":null})) {
            Ok(ClientFrame::Publish { draft, .. }) => assert_eq!(draft.data.get(), "null"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        for text in [
            r#"{"type":"publish","data":[0,2e615]}"#,
            r#"{"type":"publish","data":"x\ud800x"}"#,
        ] {
            let r = parse_client_frame(text, 1000).unwrap_err();
            assert_eq!(r.code, ErrorCode::BadFormat, "{text}");
        }
    }

    #[test]
    fn an_error_carries_the_first_64_bytes_of_its_ref() {
        // 32 two-byte characters are exactly 64 bytes; one more byte in
        // front puts the 64th byte inside a character, which is left out.
        let even = "é".repeat(MAX_REF_LEN);
        let odd = format!("a{even}");
        for (reference, kept) in [(even.as_str(), 64), (odd.as_str(), 63)] {
            for frame in [
                json!({"type":"nope","ref":reference}),
                json!({"type":"publish","data":1,"ref":reference}),
            ] {
                let r = parse(frame).unwrap_err();
                assert_eq!(r.code, ErrorCode::BadFormat);
                assert_eq!(r.reference.as_deref(), Some(&reference[..kept]));
            }
        }
        let r = parse(json!({"type":"nope","ref":7})).unwrap_err();
        assert_eq!(r.reference, None, "a ref that is no string is not read");
    }

    #[test]
    fn data_is_kept_compact_whatever_its_formatting() {
        let pretty = "{\"type\":\"publish\",\"data\":{\n  \"a\": [\n    1,\n    \"x y\"\n  ]\n}}";
        let Ok(ClientFrame::Publish { draft, .. }) = parse_client_frame(pretty, 1000) else {
            panic!("a pretty-printed publish is a publish")
        };
        assert_eq!(draft.data.get(), r#"{"a":[1,"x y"]}"#);
        let (drafts, _) =
            parse_publish_body("{\"messages\":[{\"data\": [ 99999999999 ]\n}]}", 100).unwrap();
        assert_eq!(drafts[0].data.get(), "[99999999999]");
        let (drafts, _) = parse_publish_body(&format!("{{\"data\":[{}1]}}", " ".repeat(50)), 10)
            .expect("the size limit applies to the compact data");
        assert_eq!(drafts[0].data.get(), "[1]");
    }

    #[test]
    fn depth_limit() {
        let mut deep = json!(1);
        for _ in 0..MAX_DEPTH {
            deep = json!([deep]);
        }
        assert!(parse(json!({"type":"publish","data":deep.clone()})).is_ok());
        let r = parse_client_frame(&json!({"type":"publish","data":[deep]}).to_string(), 10_000)
            .unwrap_err();
        assert_eq!(r.code, ErrorCode::BadFormat);
    }

    #[test]
    fn size_limits() {
        let text = json!({"type":"publish","data":"x".repeat(200),"ref":"big"}).to_string();
        let r = parse_client_frame(&text, 100).unwrap_err();
        assert_eq!((r.code, r.close), (ErrorCode::TooLarge, None));
        assert_eq!(
            r.reference.as_deref(),
            Some("big"),
            "the publisher learns which"
        );
        let auth = json!({"type":"auth","token":"t".repeat(200),"ref":"a"}).to_string();
        let r = parse_client_frame(&auth, 100).unwrap_err();
        assert_eq!(
            (r.code, r.reference.as_deref()),
            (ErrorCode::TooLarge, Some("a"))
        );
        // Over four times the limit the frame is not read: no ref, and the
        // connection closes.
        let r = parse_client_frame(&text, text.len() / policy::FAR_OVER_FACTOR - 1).unwrap_err();
        assert_eq!(
            (r.code, r.close),
            (ErrorCode::TooLarge, Some(CloseCode::TooBig))
        );
        assert_eq!(r.reference, None);
        let r =
            parse_client_frame(&text, text.len().div_ceil(policy::FAR_OVER_FACTOR)).unwrap_err();
        assert_eq!((r.close, r.reference.as_deref()), (None, Some("big")));
    }

    #[test]
    fn the_bridge_names_where_a_record_came_from() {
        let body = r#"{"messages":[{"data":1,"kafka":{"topic":"t","partition":2,"offset":9}},{"data":2}]}"#;
        let (drafts, _) = parse_publish_body(body, 100).unwrap();
        let position = drafts[0].kafka.clone().unwrap();
        assert_eq!(
            (position.partition_key(), position.offset),
            ("t:2".into(), 9)
        );
        assert_eq!(drafts[1].kafka, None);
        let bad = r#"{"data":1,"kafka":{"topic":"t","offset":9}}"#;
        assert_eq!(
            parse_publish_body(bad, 100).unwrap_err().code,
            ErrorCode::BadFormat
        );
    }

    #[test]
    fn http_bodies() {
        let (d, batch) = parse_publish_body(r#"{"data":{"x":1},"id":"a"}"#, 100).unwrap();
        assert!(!batch && d.len() == 1 && d[0].id.as_deref() == Some("a"));
        let (d, batch) =
            parse_publish_body(r#"{"messages":[{"data":1},{"data":2,"id":"b"}]}"#, 100).unwrap();
        assert!(batch && d.len() == 2);
        assert!(parse_publish_body(r#"{"messages":[]}"#, 100).is_err());
        assert!(parse_publish_body(r#"{"messages":[{"data":1},{}]}"#, 100)
            .unwrap_err()
            .message
            .starts_with("messages[1]"));
        assert_eq!(
            parse_publish_body(r#"{"data":"xxxxxxxxxx"}"#, 5)
                .unwrap_err()
                .code,
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn origins_are_named_as_serialized() {
        for origin in [Origin::Ws, Origin::Http, Origin::Kafka] {
            assert_eq!(Origin::parse(origin.as_str()), Some(origin));
            assert_eq!(
                serde_json::to_string(&origin).unwrap(),
                format!("\"{}\"", origin.as_str())
            );
        }
        assert_eq!(Origin::parse("mqtt"), None);
    }

    #[test]
    fn room_announcements() {
        let r = Registration {
            room: "a".into(),
            pending: 3,
        };
        assert_eq!(
            ServerFrame::Room(Cow::Borrowed(&r)).to_json(),
            r#"{"type":"room","room":"a","pending":3}"#
        );
    }

    #[test]
    fn bridge_frames() {
        assert_eq!(
            parse_bridge_frame(r#"{"type":"bridge_ack","seq":7}"#).unwrap(),
            BridgeFrame::BridgeAck { seq: 7 }
        );
        let auth = BridgeFrame::Auth { token: "t".into() };
        assert_eq!(parse_bridge_frame(&auth.to_json()).unwrap(), auth);
        for bad in [
            r#"{"type":"bridge_ack"}"#,
            r#"{"type":"nope","seq":1}"#,
            "ping!",
            r#"{"type":"bridge_ack","seq":-1}"#,
            r#"{"type":"auth","token":5}"#,
        ] {
            assert_eq!(
                parse_bridge_frame(bad).unwrap_err().code,
                ErrorCode::BadFormat,
                "{bad}"
            );
        }
    }

    #[test]
    fn presence_events_on_the_link() {
        let raw = |text: &str| RawValue::from_string(text.into()).unwrap();
        let mut event = PresenceEvent {
            room: "a".into(),
            pseq: 4,
            at: 1700,
            joins: raw(r#"[{"sub":"u","metas":[{"conn_id":"c","info":{"n": 1}}]}]"#),
            leaves: raw("[]"),
            occupancy: raw(r#"{"connections":1,"users":1,"members":1}"#),
            gap: false,
        };
        let text = ServerFrame::Presence(Cow::Borrowed(&event)).to_json();
        assert_eq!(
            text,
            r#"{"type":"presence","room":"a","pseq":4,"at":1700,"joins":[{"sub":"u","metas":[{"conn_id":"c","info":{"n": 1}}]}],"leaves":[],"occupancy":{"connections":1,"users":1,"members":1}}"#,
            "the lists pass as written, and no gap is no field"
        );
        let Ok(ServerFrame::Presence(back)) = parse_server_frame(&text) else {
            panic!("{text} reads back as presence")
        };
        assert_eq!((back.pseq, back.at, back.gap), (4, 1700, false));
        assert_eq!(back.joins.get(), event.joins.get());
        event.gap = true;
        let text = ServerFrame::Presence(Cow::Borrowed(&event)).to_json();
        assert!(text.ends_with(r#","gap":true}"#), "{text}");
        let Ok(ServerFrame::Presence(back)) = parse_server_frame(&text) else {
            panic!("{text} reads back as presence")
        };
        assert!(back.gap);
        for bad in [
            r#"{"type":"presence","room":"a","at":1,"joins":[],"leaves":[],"occupancy":{}}"#,
            r#"{"type":"presence","room":"a","pseq":1,"at":1,"leaves":[],"occupancy":{}}"#,
            r#"{"type":"presence","room":"a","pseq":-1,"at":1,"joins":[],"leaves":[],"occupancy":{}}"#,
        ] {
            assert!(parse_server_frame(bad).is_err(), "{bad}");
        }
        let ack = BridgeFrame::PresenceAck { pseq: 9 };
        assert_eq!(ack.to_json(), r#"{"type":"presence_ack","pseq":9}"#);
        assert_eq!(parse_bridge_frame(&ack.to_json()).unwrap(), ack);
        for bad in [
            r#"{"type":"presence_ack"}"#,
            r#"{"type":"presence_ack","seq":9}"#,
            r#"{"type":"presence_ack","pseq":"9"}"#,
        ] {
            assert_eq!(
                parse_bridge_frame(bad).unwrap_err().code,
                ErrorCode::BadFormat,
                "{bad}"
            );
        }
    }

    #[test]
    fn every_server_frame_reads_back_as_written() {
        let receipt = Receipt {
            id: "i".into(),
            seq: 3,
            duplicate: false,
        };
        let message = Message {
            room: "a".into(),
            id: "i".into(),
            seq: 1,
            ts: 2,
            sender: "s".into(),
            origin: Origin::Ws,
            data: RawValue::from_string(r#"{"deep":[1,{"x":"y"}]}"#.into()).unwrap(),
            trace: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        };
        let welcome = Welcome {
            room: "a".into(),
            conn_id: "c".into(),
            epoch: "e".into(),
            head: 4,
            recovered: true,
            heartbeat_ms: 1,
            max_message_bytes: 2,
            rate: RateInfo {
                per_sec: 3,
                burst: 4,
            },
            exp: 5,
            cursor: Some(2),
            catch_up: Some(CatchUp { since: 1, until: 4 }),
        };
        let frames = [
            ServerFrame::Welcome(Cow::Borrowed(&welcome)),
            ServerFrame::Message(Cow::Borrowed(&message)),
            ServerFrame::Ack {
                room: Some("a".into()),
                reference: Some("r".into()),
                receipt: Cow::Borrowed(&receipt),
            },
            ServerFrame::Error {
                room: Some("a".into()),
                code: ErrorCode::BadToken,
                message: "m".into(),
                reference: None,
            },
            ServerFrame::AuthOk { exp: 9 },
            ServerFrame::TokenExpiring { exp: 9 },
            ServerFrame::Room(Cow::Owned(Registration {
                room: "a".into(),
                pending: 1,
            })),
            ServerFrame::Presence(Cow::Owned(PresenceEvent {
                room: "a".into(),
                pseq: 1,
                at: 2,
                joins: RawValue::from_string(r#"[{"sub":"s","metas":[]}]"#.into()).unwrap(),
                leaves: RawValue::from_string("[]".into()).unwrap(),
                occupancy: RawValue::from_string(r#"{"connections":0}"#.into()).unwrap(),
                gap: true,
            })),
        ];
        for frame in frames {
            let text = frame.to_json();
            let back = parse_server_frame(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(back.to_json(), text);
        }
        assert!(parse_server_frame(r#"{"type":"nope"}"#).is_err());
        assert!(parse_server_frame("pong").is_err());
    }

    #[test]
    fn server_frames_serialize_per_spec() {
        let receipt = Receipt {
            id: "i".into(),
            seq: 3,
            duplicate: false,
        };
        let ack = ServerFrame::Ack {
            room: None,
            reference: Some("r".into()),
            receipt: Cow::Borrowed(&receipt),
        }
        .to_json();
        assert_eq!(
            serde_json::from_str::<Value>(&ack).unwrap(),
            json!({"type":"ack","ref":"r","id":"i","seq":3,"duplicate":false})
        );
        let msg = Message {
            room: "a".into(),
            id: "i".into(),
            seq: 1,
            ts: 2,
            sender: "s".into(),
            origin: Origin::Kafka,
            data: RawValue::from_string("[1]".into()).unwrap(),
            trace: None,
        };
        let frame: Value =
            serde_json::from_str(&ServerFrame::Message(Cow::Borrowed(&msg)).to_json()).unwrap();
        assert_eq!(
            frame,
            json!({"type":"message","room":"a","id":"i","seq":1,"ts":2,"sender":"s","origin":"kafka","data":[1]})
        );
        let err: Value = serde_json::from_str(
            &ServerFrame::Error {
                room: None,
                code: ErrorCode::RateLimited,
                message: "m".into(),
                reference: None,
            }
            .to_json(),
        )
        .unwrap();
        assert_eq!(
            err,
            json!({"type":"error","code":"rate_limited","message":"m"})
        );
        assert_eq!(
            error_body(ErrorCode::BadRoom, "x"),
            r#"{"error":{"code":"bad_room","message":"x"}}"#
        );
    }
}
