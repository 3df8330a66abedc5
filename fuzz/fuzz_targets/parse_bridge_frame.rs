//! Frames the bridge sends on its room and registry links, as the worker
//! reads them. Each input is read two ways:
//!
//! - as the frame's text: refused with `bad_format`, or read into a frame
//!   that writes back to the same frame;
//! - as the choices that write a `bridge_ack` or `auth` frame by the grammar
//!   (docs/internals.md, "Bridge links"; keys in any order, escapes,
//!   whitespace, fields no reader knows): read as written, or, with one
//!   flaw (a missing, negative, fractional or quoted `seq`, a token that is
//!   not a string, an unknown type), refused with `bad_format`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast_fuzz::contract;
use roomcast_fuzz::json::{self, Gen, Json};
use roomcast_protocol::wire::{parse_bridge_frame, BridgeFrame};
use roomcast_protocol::ErrorCode;

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    match parse_bridge_frame(&text) {
        Ok(frame) => {
            let json = frame.to_json();
            assert_eq!(parse_bridge_frame(&json).as_ref(), Ok(&frame), "{json}");
        }
        Err(rejection) => {
            assert_eq!(rejection.code, ErrorCode::BadFormat, "{rejection:?}");
            contract::refused(&rejection);
        }
    }

    let mut g = Gen::new(bytes);
    let (expected, written) = frame(&mut g);
    let text = if g.chance(2) {
        written.spaced(&mut g)
    } else {
        written.compact()
    };
    match (expected, parse_bridge_frame(&text)) {
        (Some(expected), Ok(frame)) => assert_eq!(frame, expected, "{text}"),
        (None, Err(rejection)) => {
            assert_eq!(rejection.code, ErrorCode::BadFormat, "{rejection:?}");
            contract::refused(&rejection);
        }
        (expected, read) => panic!("{text} read as {read:?}, not {expected:?}"),
    }
});

/// A bridge frame and its text, or (`None`) a text with one flaw.
fn frame(g: &mut Gen) -> (Option<BridgeFrame>, Json) {
    let flawed = g.chance(6);
    let (frame, kind, field) = if g.chance(3) {
        let pseq = g.u64();
        let value = if flawed {
            Json::Token(g.pick(&["-1", "0.5", "\"3\"", "null"]).to_owned())
        } else {
            Json::Token(pseq.to_string())
        };
        (
            BridgeFrame::PresenceAck { pseq },
            "presence_ack",
            ("pseq", value),
        )
    } else if g.chance(2) {
        let seq = g.u64();
        let value = if flawed {
            Json::Token(
                g.pick(&["-1", "1.5", "\"7\"", "1e3", "18446744073709551616", "null"])
                    .to_owned(),
            )
        } else {
            Json::Token(seq.to_string())
        };
        (BridgeFrame::BridgeAck { seq }, "bridge_ack", ("seq", value))
    } else {
        let token = g.text(0, 300);
        let value = if flawed {
            Json::Token(g.pick(&["7", "null", "[\"t\"]", "{}", "true"]).to_owned())
        } else {
            Json::string(g, &token)
        };
        (BridgeFrame::Auth { token }, "auth", ("token", value))
    };
    let missing = flawed && g.chance(3);
    let kind = if flawed && g.chance(3) {
        g.pick(&["bridge_acks", "Auth", "ack", ""])
    } else {
        kind
    };
    let mut entries = vec![("type", Json::string(g, kind))];
    if !missing {
        entries.push(field);
    }
    while g.chance(4) {
        let value = json::value(g, 3);
        entries.push((g.pick(&["x", "Seq", "tokens"]), value));
    }
    g.shuffle(&mut entries);
    ((!flawed).then_some(frame), Json::object(g, entries))
}
