//! Frames of a multiplexed connection, under a small limit and the default
//! `MAX_MESSAGE_BYTES`. Each input is read two ways:
//!
//! - as the frame's text: never a panic; a refusal with the documented code
//!   (`too_large` exactly when over the limit); an accepted `subscribe`
//!   lists distinct valid rooms within the room limit; an accepted
//!   `publish` names a valid room and is the publish a room's connection
//!   reads from the same text;
//! - as the choices that write a `subscribe` of several rooms, each with or
//!   without `since` and `epoch`: it reads back room for room, and one room
//!   too many is refused with `too_many_rooms`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast_fuzz::contract;
use roomcast_fuzz::json::Gen;
use roomcast_protocol::mux::{parse_mux_frame, MuxFrame, Resume};
use roomcast_protocol::room::RoomName;
use roomcast_protocol::wire::{parse_client_frame, ClientFrame};
use roomcast_protocol::ErrorCode;
use serde_json::json;

const LIMITS: [usize; 2] = [64, 65_536];
const MAX_ROOMS: usize = 8;

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    for max in LIMITS {
        read_any(&text, max);
    }
    let mut g = Gen::new(bytes);
    read_written_subscribe(&mut g);
});

fn read_any(text: &str, max: usize) {
    let read = parse_mux_frame(text, max, MAX_ROOMS);
    if read.is_ok() {
        assert!(
            text.len() <= max,
            "{} bytes accepted under {max}",
            text.len()
        );
    }
    match read {
        Ok(MuxFrame::Subscribe { rooms, .. }) => {
            assert!(!rooms.is_empty() && rooms.len() <= MAX_ROOMS, "{text}");
            for (i, resume) in rooms.iter().enumerate() {
                assert!(RoomName::parse(&resume.room).is_some(), "{text}");
                assert!(rooms[..i].iter().all(|r| r.room != resume.room), "{text}");
            }
        }
        Ok(MuxFrame::Unsubscribe { room, .. }) => {
            assert!(RoomName::parse(&room).is_some(), "{text}")
        }
        Ok(MuxFrame::Publish {
            room,
            draft,
            reference,
        }) => {
            assert!(RoomName::parse(&room).is_some(), "{text}");
            contract::accepted(&draft, max);
            let Ok(ClientFrame::Publish {
                draft: same,
                reference: same_ref,
            }) = parse_client_frame(text, max)
            else {
                panic!("a room's connection refuses what a multiplexed one accepts: {text}");
            };
            assert_eq!(same.data.get(), draft.data.get(), "{text}");
            assert_eq!(
                (same.id, same.trace, same_ref),
                (draft.id, draft.trace, reference)
            );
        }
        Ok(MuxFrame::Auth { .. }) => {}
        Err(refused) => {
            assert_eq!(
                refused.refusal.code == ErrorCode::TooLarge,
                text.len() > max,
                "{refused:?}"
            );
            let refusal = &refused.refusal;
            assert!(
                matches!(
                    refusal.code,
                    ErrorCode::BadFormat
                        | ErrorCode::TooLarge
                        | ErrorCode::BadRoom
                        | ErrorCode::TooManyRooms
                ),
                "{refused:?}"
            );
            contract::error_frame(refusal.code, &refusal.message, refusal.reference.as_deref());
        }
    }
}

fn read_written_subscribe(g: &mut Gen) {
    let count = g.range(1, MAX_ROOMS as u64) as usize;
    let rooms: Vec<Resume> = (0..count)
        .map(|i| Resume {
            room: format!("r{i}.{}", g.range(0, 1000)),
            since: g.chance(2).then(|| g.u64()),
            epoch: g.chance(2).then(|| g.short_text(16)),
        })
        .collect();
    let text = json!({"type": "subscribe", "rooms": rooms}).to_string();
    match parse_mux_frame(&text, usize::MAX / 8, MAX_ROOMS) {
        Ok(MuxFrame::Subscribe { rooms: read, .. }) => assert_eq!(read, rooms, "{text}"),
        other => panic!("{text}: {other:?}"),
    }
    let mut over = rooms.clone();
    over.extend((0..=MAX_ROOMS - count).map(|i| Resume {
        room: format!("over{i}"),
        since: None,
        epoch: None,
    }));
    let text = json!({"type": "subscribe", "rooms": over}).to_string();
    let refused = parse_mux_frame(&text, usize::MAX / 8, MAX_ROOMS).unwrap_err();
    assert_eq!(refused.refusal.code, ErrorCode::TooManyRooms, "{text}");
}
