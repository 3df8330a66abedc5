//! The promises every parser of untrusted input keeps, as assertions.
//!
//! A refusal must become an answer: the worker turns a [`Refusal`] into an
//! `error` frame (WebSocket) or an `{"error":{...}}` body (HTTP), so both are
//! built here and read back as a client reads them. An accepted message must
//! fit the limits and survive the trip to every reader: the room broadcasts
//! it as a `message` frame, which the bridge parses back, and a sharded room
//! sends that frame to its shards in batches ([`crosses_shards`]).

use std::borrow::Cow;
use std::collections::HashMap;

use roomcast_protocol::draft::{Draft, Origin};
use roomcast_protocol::policy::MAX_DEPTH;
use roomcast_protocol::shard::{encode_batch, encode_join_reply, parse_batch, parse_join_reply};
use roomcast_protocol::trace::is_traceparent;
use roomcast_protocol::wire::{
    error_body, parse_client_frame, parse_server_frame, ClientFrame, Message, ServerFrame,
    MAX_ID_LEN, MAX_REF_LEN,
};
use roomcast_protocol::{ErrorCode, Refusal};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::indent;
use crate::json::Gen;

/// A refused frame or body: one of the codes a parser may give, and an answer
/// on both transports.
pub fn refused(rejection: &Refusal) {
    assert!(
        matches!(rejection.code, ErrorCode::BadFormat | ErrorCode::TooLarge),
        "a parser answered {:?}",
        rejection.code
    );
    if let Some(reference) = &rejection.reference {
        assert!(
            reference.len() <= MAX_REF_LEN,
            "ref of {} bytes echoed",
            reference.len()
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
        room: None,
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
            ..
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

/// An accepted `publish` frame `text`, read as `draft` and `reference`:
///
/// - pretty-printed (as `JSON.stringify(v, null, 2)` writes it) it is the
///   same publish, its `data` the compact form of the `data` written;
/// - the `message` frame the room makes of it crosses a shard batch and a
///   join reply byte for byte and under its seq, among frames whose content
///   looks like framing, and reads back as the same message.
///
/// `g` draws the message's other fields and the frames around it.
pub fn crosses_shards(text: &str, draft: &Draft, reference: Option<&str>, g: &mut Gen) {
    let written = raw_field(text, "data").unwrap_or_else(|| panic!("no data in {text}"));
    assert_eq!(
        draft.data.get(),
        indent::compact(written.get()),
        "data of {text} is not kept compact"
    );
    let pretty = indent::pretty(text);
    let again = match parse_client_frame(&pretty, pretty.len()) {
        Ok(ClientFrame::Publish {
            draft: again,
            reference: again_reference,
        }) => {
            assert_eq!(again_reference.as_deref(), reference, "ref of {pretty}");
            again
        }
        Ok(ClientFrame::Auth { .. }) => panic!("{text} pretty-printed is auth: {pretty}"),
        Err(rejection) => panic!("{text} pretty-printed is refused: {rejection:?}\n{pretty}"),
    };
    assert_eq!(again.data.get(), draft.data.get(), "data of {pretty}");
    assert_eq!(
        (&again.id, &again.trace),
        (&draft.id, &draft.trace),
        "{pretty}"
    );

    // Seqs in order, from anywhere in the range, with gaps.
    let count = g.range(1, 5) as usize;
    let ours = g.below(count);
    let mut seqs = vec![g.range(1, u64::MAX - 5 * 1_000)];
    while seqs.len() < count {
        seqs.push(seqs[seqs.len() - 1] + g.range(1, 1_000));
    }
    let seq = seqs[ours];
    let message = Message {
        room: "fuzz.room".into(),
        id: again.id.clone().unwrap_or_else(|| format!("m_{seq}")),
        seq,
        ts: g.u64(),
        sender: g.short_text(32),
        origin: g.pick(&[Origin::Ws, Origin::Http, Origin::Kafka]),
        data: again.data,
        trace: again.trace,
    };
    let frame = ServerFrame::Message(Cow::Borrowed(&message)).to_json();
    let frames: Vec<(u64, String)> = seqs
        .iter()
        .map(|&s| {
            (
                s,
                if s == seq {
                    frame.clone()
                } else {
                    lookalike(g)
                },
            )
        })
        .collect();
    let frames: Vec<(u64, &str)> = frames.iter().map(|(s, f)| (*s, f.as_str())).collect();

    let prev = g.chance(2).then(|| g.u64());
    crosses_batch_and_join_reply(prev, &frames, g);

    // What the shard hands its clients reads as the message stored.
    match parse_server_frame(frames[ours].1) {
        Ok(ServerFrame::Message(back)) => {
            assert_eq!(back.seq, seq, "{frame}");
            assert_eq!(back.data.get(), message.data.get(), "{frame}");
            assert_eq!((&back.id, &back.trace), (&message.id, &message.trace));
        }
        other => panic!("message frame {frame} reads back as {other:?}"),
    }
}

/// `frames` (in seq order), sent in a batch after `prev` and in a join
/// reply after a welcome drawn from `g`, read back frame for frame, byte
/// for byte.
pub fn crosses_batch_and_join_reply(prev: Option<u64>, frames: &[(u64, &str)], g: &mut Gen) {
    let batch = encode_batch(prev, frames.iter().copied());
    match parse_batch(&batch) {
        Ok(back) => {
            assert_eq!(back.prev, prev, "{batch:?}");
            assert_eq!(back.frames, frames, "{batch:?}");
        }
        Err(e) => panic!("the sequencer's own batch is refused ({e}): {batch:?}"),
    }
    let welcome = lookalike(g);
    let presence: Vec<String> = (0..g.below(3)).map(|_| lookalike(g)).collect();
    let reply = encode_join_reply(&welcome, &presence, frames.iter().copied());
    match parse_join_reply(&reply) {
        Ok(back) => {
            assert_eq!(back.welcome, welcome, "{reply:?}");
            assert_eq!(back.presence, presence, "{reply:?}");
            assert_eq!(back.replay, frames, "{reply:?}");
        }
        Err(e) => panic!("the sequencer's own join reply is refused ({e}): {reply:?}"),
    }
}

/// The raw value of field `name` of the JSON object `text`.
fn raw_field<'a>(text: &'a str, name: &str) -> Option<&'a RawValue> {
    let fields: HashMap<String, &RawValue> = serde_json::from_str(text).ok()?;
    fields.get(name).copied()
}

/// Text that reads as batch framing if anything scans it: newlines, `prev`
/// lines, `<seq> <length>` lines, a frame cut short; or a plain frame.
pub fn lookalike(g: &mut Gen) -> String {
    const PIECES: [&str; 9] = [
        "\n",
        "prev 1\n",
        "prev -\n",
        "4 2\n{}\n",
        "welcome 3\n",
        "99999999999 ",
        "{\"type\":\"message\",\"seq\":1}",
        "é",
        "\r\n",
    ];
    let mut text = String::new();
    while g.chance(2) {
        if g.chance(3) {
            text.push_str(&g.short_text(24));
        } else {
            text.push_str(g.pick(&PIECES));
        }
    }
    text
}
