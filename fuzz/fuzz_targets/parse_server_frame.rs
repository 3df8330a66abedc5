//! Frames the worker sends, as the bridge (and the tests) read them: a typed
//! `serde_json` error, or a frame that writes out as text which reads back
//! to the same frame.
//!
//! The same text, except for `stats`, whose histogram floats may move by one
//! unit in the last place: serde_json without its `float_roundtrip` feature,
//! as the workspace builds it, parses floats to within that, not exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast_protocol::wire::{parse_server_frame, ServerFrame};
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
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});

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
