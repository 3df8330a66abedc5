//! Property tests for the two pieces that face untrusted input at volume:
//! the client frame parser (anything a socket can carry) and the rate
//! limiter (any sequence of clocks and limits), plus the resume arithmetic
//! and room-name rule they are built on.

use proptest::prelude::*;
use roomcast_protocol::config::Limits;
use roomcast_protocol::history::{plan_resume, Retained};
use roomcast_protocol::rate::{admit, Admission, Bucket, RoomBudget};
use roomcast_protocol::wire::{parse_client_frame, ClientFrame};
use roomcast_protocol::{ErrorCode, RoomName};
use serde_json::{json, Value};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-z\\\\\"\u{1F600}]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(40, 200, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::hash_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The room-name rule written out independently of the implementation.
fn spec_room_name(name: &str) -> bool {
    let ok_rest = |c: char| c.is_ascii_alphanumeric() || ".:_-".contains(c);
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(ok_rest)
        && name.len() <= 128
}

proptest! {
    #[test]
    fn parser_never_panics_on_text(text in ".{0,300}", max in 0usize..400) {
        if let Err(r) = parse_client_frame(&text, max) {
            prop_assert!(matches!(r.code, ErrorCode::BadFormat | ErrorCode::TooLarge), "{:?}", r.code);
        }
    }

    #[test]
    fn parser_never_panics_on_json(value in json_value()) {
        let text = value.to_string();
        if let Err(r) = parse_client_frame(&text, 1 << 20) {
            prop_assert_eq!(r.code, ErrorCode::BadFormat);
        }
    }

    #[test]
    fn over_the_limit_is_too_large(data in "[a-z]{1,200}") {
        let text = json!({"type": "publish", "data": data}).to_string();
        let r = parse_client_frame(&text, text.len() - 1).unwrap_err();
        prop_assert_eq!(r.code, ErrorCode::TooLarge);
    }

    #[test]
    fn publish_round_trips_its_data(data in json_value(), reference in proptest::option::of("[a-z0-9]{1,64}")) {
        let frame = json!({"type": "publish", "data": data, "ref": reference});
        match parse_client_frame(&frame.to_string(), 1 << 20) {
            Ok(ClientFrame::Publish { draft, reference: got }) => {
                prop_assert_eq!(serde_json::from_str::<Value>(draft.data.get()).unwrap(), data);
                prop_assert_eq!(got, reference);
            }
            other => prop_assert!(false, "{:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn room_names_follow_the_rule(name in "[A-Za-z0-9._:/ -]{0,130}") {
        prop_assert_eq!(RoomName::parse(&name).is_some(), spec_room_name(&name));
    }

    #[test]
    fn a_connection_never_exceeds_burst_plus_refill(
        per_sec in 1u32..50,
        burst in 1u32..50,
        gaps in prop::collection::vec(0u64..400, 1..300),
    ) {
        let limits = Limits { rate_per_sec: per_sec, rate_burst: burst, room_rate_per_sec: u32::MAX, rate_strikes: u32::MAX, ..Limits::default() };
        let (mut bucket, mut room) = (Bucket::new(burst, 0), RoomBudget::default());
        let (mut now, mut accepted) = (0u64, 0u64);
        for gap in gaps {
            now += gap;
            if admit(&mut bucket, &mut room, 1, &limits, now) == Admission::Accepted {
                accepted += 1;
            }
            let allowed = f64::from(burst) + f64::from(per_sec) * now as f64 / 1000.0;
            prop_assert!(accepted as f64 <= allowed + 1e-9, "{} accepted by {} ms, allowed {}", accepted, now, allowed);
        }
    }

    #[test]
    fn the_limiter_survives_any_input(
        per_sec in any::<u32>(), burst in any::<u32>(), room_rate in any::<u32>(), strikes in any::<u32>(),
        clocks in prop::collection::vec(any::<u64>(), 1..50),
    ) {
        let limits = Limits { rate_per_sec: per_sec, rate_burst: burst, room_rate_per_sec: room_rate, rate_strikes: strikes, ..Limits::default() };
        let (mut bucket, mut room) = (Bucket::new(burst, clocks[0]), RoomBudget::default());
        for (i, now) in clocks.into_iter().enumerate() {
            admit(&mut bucket, &mut room, i as u32, &limits, now);
        }
    }

    #[test]
    fn resume_is_gapless_or_refused(
        since in proptest::option::of(0u64..200),
        same_epoch in any::<bool>(),
        head in 0u64..200,
        kept in 0u64..200,
    ) {
        let oldest = (kept > 0 && head > 0).then(|| head.saturating_sub(kept.min(head)) + 1);
        let retained = Retained { head, oldest };
        let plan = plan_resume(since, Some(if same_epoch { "e_a" } else { "e_b" }), "e_a", retained);
        if !same_epoch || since.is_none() {
            prop_assert!(!plan.recovered);
        }
        if plan.recovered {
            let since = since.unwrap();
            prop_assert!(since <= head);
            if let Some(after) = plan.replay_after {
                prop_assert_eq!(after, since);
                prop_assert!(oldest.is_some_and(|o| o <= since + 1), "replay from {} but oldest {:?}", since + 1, oldest);
            } else {
                prop_assert_eq!(since, head);
            }
        }
        if plan.replay_after.is_some() {
            prop_assert!(plan.recovered);
        }
    }
}

/// The length limits let through exactly their limit: a `ref` of
/// `MAX_REF_LEN` bytes and an `id` of `MAX_ID_LEN` bytes are read back
/// whole, on a socket and over HTTP, and one byte more is refused.
#[test]
fn length_limits_are_inclusive() {
    use roomcast_protocol::wire::{parse_publish_body, MAX_ID_LEN, MAX_REF_LEN};
    let (reference, id) = ("r".repeat(MAX_REF_LEN), "i".repeat(MAX_ID_LEN));
    let frame = json!({"type": "publish", "ref": reference, "id": id, "data": 1}).to_string();
    match parse_client_frame(&frame, 1 << 16) {
        Ok(ClientFrame::Publish {
            draft,
            reference: got,
        }) => {
            assert_eq!(got.as_deref(), Some(reference.as_str()));
            assert_eq!(draft.id.as_deref(), Some(id.as_str()));
        }
        other => panic!("a frame at both limits is read: {other:?}"),
    }
    let over_ref = json!({"type": "publish", "ref": format!("{reference}r"), "data": 1});
    assert!(parse_client_frame(&over_ref.to_string(), 1 << 16).is_err());
    let over_id = json!({"type": "publish", "id": format!("{id}i"), "data": 1});
    assert!(parse_client_frame(&over_id.to_string(), 1 << 16).is_err());
    let body = json!({"id": id, "data": 1}).to_string();
    let (drafts, _) = parse_publish_body(&body, 1 << 16).expect("a body at the id limit");
    assert_eq!(drafts[0].id.as_deref(), Some(id.as_str()));
    let over = json!({"id": format!("{id}i"), "data": 1}).to_string();
    assert!(parse_publish_body(&over, 1 << 16).is_err());
}
