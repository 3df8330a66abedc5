//! Frames the worker sends, as the bridge (and the tests) read them. Each
//! input is read two ways:
//!
//! - as a frame's text: a frame that writes out as text which reads back to
//!   the same frame, or a typed `serde_json` error: a data error (the
//!   frame's shape) whenever the text is JSON at all, never a syntax error
//!   about text any JSON reader reads;
//! - as the choices that make a frame of every kind but `stats` (a room
//!   link's `presence` events included; any
//!   strings, numbers across their range, optional fields present or not):
//!   its text reads back to the same frame, and so does the text
//!   pretty-printed, but for the whitespace it then has in `data`.
//!
//! The same text, except for `stats`, whose histogram floats may move by one
//! unit in the last place: serde_json without its `float_roundtrip` feature,
//! as the workspace builds it, parses floats to within that, not exactly.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use roomcast_fuzz::indent;
use roomcast_fuzz::json::{self, Gen};
use roomcast_protocol::draft::Origin;
use roomcast_protocol::wire::{
    parse_server_frame, CatchUp, Message, PresenceEvent, RateInfo, Receipt, Registration,
    ServerFrame, Welcome,
};
use roomcast_protocol::ErrorCode;
use serde_json::value::RawValue;
use serde_json::Value;

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    match parse_server_frame(&text) {
        Ok(frame) => {
            let json = frame.to_json();
            let again = match parse_server_frame(&json) {
                Ok(back) => back.to_json(),
                Err(e) => panic!("{json} does not read back: {e}"),
            };
            if let ServerFrame::Stats(_) = frame {
                let parse = |s: &str| serde_json::from_str::<Value>(s).expect("stats are JSON");
                assert!(same(&parse(&json), &parse(&again)), "{json}\n{again}");
            } else {
                assert_eq!(json, again);
            }
        }
        Err(e) => {
            if serde_json::from_str::<Value>(&text).is_ok() {
                assert!(e.is_data(), "JSON refused for its syntax ({e}): {text}");
            }
        }
    }

    let mut g = Gen::new(bytes);
    let frame = frame(&mut g);
    let json = frame.to_json();
    match parse_server_frame(&json) {
        Ok(back) => assert_eq!(back.to_json(), json),
        Err(e) => panic!("{json} does not read back: {e}"),
    }
    // A message's `data` is read as written, whitespace included.
    let pretty = indent::pretty(&json);
    match parse_server_frame(&pretty) {
        Ok(back) => assert_eq!(indent::compact(&back.to_json()), json, "{pretty}"),
        Err(e) => panic!("{pretty} does not read back: {e}"),
    }
});

const CODES: [ErrorCode; 17] = [
    ErrorCode::BadRoom,
    ErrorCode::BadRequest,
    ErrorCode::Unauthorized,
    ErrorCode::Forbidden,
    ErrorCode::BadOrigin,
    ErrorCode::UpgradeRequired,
    ErrorCode::NotFound,
    ErrorCode::MethodNotAllowed,
    ErrorCode::BadFormat,
    ErrorCode::TooLarge,
    ErrorCode::RateLimited,
    ErrorCode::TooManyConnections,
    ErrorCode::IdConflict,
    ErrorCode::BadToken,
    ErrorCode::Internal,
    ErrorCode::TooManyRooms,
    ErrorCode::NotSubscribed,
];

/// Any frame the worker writes but `stats`.
fn frame(g: &mut Gen) -> ServerFrame<'static> {
    let text = |g: &mut Gen| g.text(0, 64);
    let optional = |g: &mut Gen| g.chance(2).then(|| g.text(0, 64));
    match g.below(8) {
        0 => ServerFrame::Welcome(Cow::Owned(Welcome {
            room: text(g),
            conn_id: text(g),
            epoch: text(g),
            head: g.u64(),
            recovered: g.chance(2),
            heartbeat_ms: g.u64(),
            max_message_bytes: g.u64() as usize,
            rate: RateInfo {
                per_sec: g.range(0, u32::MAX.into()) as u32,
                burst: g.range(0, u32::MAX.into()) as u32,
            },
            exp: g.u64(),
            cursor: g.chance(2).then(|| g.u64()),
            catch_up: g.chance(2).then(|| CatchUp {
                since: g.u64(),
                until: g.u64(),
            }),
        })),
        1 => ServerFrame::Message(Cow::Owned(Message {
            room: text(g),
            id: text(g),
            seq: g.u64(),
            ts: g.u64(),
            sender: text(g),
            origin: g.pick(&[Origin::Ws, Origin::Http, Origin::Kafka]),
            data: RawValue::from_string(json::data(g).compact()).expect("generated JSON"),
            trace: optional(g),
        })),
        2 => ServerFrame::Ack {
            room: optional(g).map(Cow::Owned),
            reference: optional(g).map(Cow::Owned),
            receipt: Cow::Owned(Receipt {
                id: text(g),
                seq: g.u64(),
                duplicate: g.chance(2),
            }),
        },
        3 => ServerFrame::Error {
            room: optional(g).map(Cow::Owned),
            code: g.pick(&CODES),
            message: Cow::Owned(text(g)),
            reference: optional(g).map(Cow::Owned),
        },
        4 => ServerFrame::AuthOk { exp: g.u64() },
        5 => ServerFrame::TokenExpiring { exp: g.u64() },
        6 => ServerFrame::Room(Cow::Owned(Registration {
            room: text(g),
            pending: g.u64(),
        })),
        _ => {
            let raw = |g: &mut Gen| {
                RawValue::from_string(json::data(g).compact()).expect("generated JSON")
            };
            ServerFrame::Presence(Cow::Owned(PresenceEvent {
                room: text(g),
                pseq: g.u64(),
                at: g.u64(),
                joins: raw(g),
                leaves: raw(g),
                occupancy: raw(g),
                gap: g.chance(2),
            }))
        }
    }
}

/// Equal, but for floats one unit in the last place apart.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() && y.is_f64() => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x.is_sign_positive() == y.is_sign_positive() && x.to_bits().abs_diff(y.to_bits()) <= 1
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}
