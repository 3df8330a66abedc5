//! WebSocket client frames, under a small limit (most frames are over it,
//! so the size checks and the 1009 cut-off are exercised) and under the
//! default `MAX_MESSAGE_BYTES` (every frame is parsed). Each input is read
//! two ways:
//!
//! - as the frame's text: never a panic, a refusal with the documented
//!   code, an accepted publish within the limits;
//! - as the choices that write a frame by the grammar ([`frames`]): a valid
//!   one is accepted with every field as written (`data` compact), a frame
//!   with one flaw is refused with `bad_format` and its `ref`.
//!
//! Every publish accepted either way, pretty-printed, is the same publish,
//! and its `message` frame crosses a shard batch intact
//! ([`contract::crosses_shards`]).
//!
//! A WebSocket text frame is UTF-8, so bytes that are not are read lossily:
//! every input still reaches the parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast_fuzz::contract;
use roomcast_fuzz::frames::{self, Reading, Written};
use roomcast_fuzz::json::Gen;
use roomcast_protocol::policy::FAR_OVER_FACTOR;
use roomcast_protocol::wire::{parse_client_frame, ClientFrame, MAX_REF_LEN};
use roomcast_protocol::ErrorCode;

const LIMITS: [usize; 2] = [64, 65_536];

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    for max in LIMITS {
        match parse_client_frame(&text, max) {
            Ok(frame) => {
                assert!(text.len() <= max, "{} bytes accepted", text.len());
                if let ClientFrame::Publish { draft, reference } = frame {
                    if let Some(reference) = &reference {
                        assert!(reference.len() <= MAX_REF_LEN, "ref {reference:?}");
                    }
                    contract::accepted(&draft, max);
                    if max == LIMITS[1] {
                        let mut g = Gen::new(bytes);
                        contract::crosses_shards(&text, &draft, reference.as_deref(), &mut g);
                    }
                }
            }
            Err(rejection) => {
                let over = text.len() > max;
                assert_eq!(rejection.code == ErrorCode::TooLarge, over, "{rejection:?}");
                assert_eq!(
                    rejection.close.is_some(),
                    text.len() > max * FAR_OVER_FACTOR,
                    "{rejection:?}"
                );
                contract::refused(&rejection);
            }
        }
    }

    let mut g = Gen::new(bytes);
    let written = frames::client_frame(&mut g);
    let text = if g.chance(2) {
        written.json.spaced(&mut g)
    } else {
        written.json.compact()
    };
    for max in LIMITS {
        read_as_written(&written, &text, max, &mut g);
    }
});

/// `text`, a frame written as `written` says, read under `max`.
fn read_as_written(written: &Written, text: &str, max: usize, g: &mut Gen) {
    let result = parse_client_frame(text, max);
    if text.len() > max {
        let fatal = text.len() > max * FAR_OVER_FACTOR;
        match result {
            Err(rejection) => {
                assert_eq!(rejection.code, ErrorCode::TooLarge, "{text}");
                assert_eq!(rejection.close.is_some(), fatal, "{text}");
                // The publisher learns which frame it was, unless it is so
                // large that the room does not read it at all.
                let echoed = if fatal { None } else { written.echoed_ref() };
                assert_eq!(rejection.reference, echoed, "ref of {text}");
                contract::refused(&rejection);
            }
            Ok(_) => panic!("{} bytes accepted under {max}: {text}", text.len()),
        }
        return;
    }
    match (&written.reading, result) {
        (Reading::Publish(expected), Ok(ClientFrame::Publish { draft, reference })) => {
            expected.matches(&draft, reference.as_deref(), text);
            contract::accepted(&draft, max);
            if max == LIMITS[1] {
                contract::crosses_shards(text, &draft, reference.as_deref(), g);
            }
        }
        (Reading::Auth { token }, Ok(ClientFrame::Auth { token: read })) => {
            assert_eq!(&read, token, "token of {text}");
        }
        (Reading::Refused(flaw), Err(rejection)) => {
            assert_eq!(rejection.code, ErrorCode::BadFormat, "{flaw:?}: {text}");
            assert!(rejection.close.is_none(), "{flaw:?}: {text}");
            assert_eq!(
                rejection.reference,
                written.echoed_ref(),
                "{flaw:?}: {text}"
            );
            contract::refused(&rejection);
        }
        (Reading::Refused(flaw), Ok(_)) => panic!("accepted with {flaw:?}: {text}"),
        (reading, Ok(_)) => panic!("not read as {reading:?}: {text}"),
        (reading, Err(rejection)) => {
            panic!("refused {rejection:?}, not read as {reading:?}: {text}")
        }
    }
}
