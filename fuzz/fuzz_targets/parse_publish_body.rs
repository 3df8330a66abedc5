//! HTTP publish bodies (`POST /v1/rooms/{room}/messages`): one message or a
//! batch, under a limit small enough that many messages are over it and
//! under the default `MAX_MESSAGE_BYTES`. Each input is read two ways:
//!
//! - as the body's text: never a panic, a refusal with the documented
//!   code, accepted messages within the limits;
//! - as the choices that write a body by the grammar ([`frames::body`]):
//!   a valid one is accepted with every message as written (`data`
//!   compact, `id`, `trace`, `kafka`), in order; one with a flaw, a batch
//!   of 0 or 501 messages or a message whose compact `data` is over the
//!   limit is refused with the documented code, naming the message.
//!
//! `req.text()` hands the room a string, so bytes that are not UTF-8 are read
//! lossily: every input still reaches the parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast_fuzz::contract;
use roomcast_fuzz::frames::{self, Body, Reading};
use roomcast_fuzz::json::Gen;
use roomcast_protocol::wire::{parse_publish_body, MAX_BATCH};
use roomcast_protocol::ErrorCode;

const LIMITS: [usize; 2] = [16, 65_536];

fuzz_target!(|bytes: &[u8]| {
    let body = String::from_utf8_lossy(bytes);
    for max in LIMITS {
        match parse_publish_body(&body, max) {
            Ok((drafts, batch)) => {
                assert!(
                    (1..=MAX_BATCH).contains(&drafts.len()) && (batch || drafts.len() == 1),
                    "{} drafts, batch {batch}",
                    drafts.len()
                );
                for draft in &drafts {
                    contract::accepted(draft, max);
                }
            }
            Err(rejection) => contract::refused(&rejection),
        }
    }

    let mut g = Gen::new(bytes);
    let written = frames::body(&mut g);
    let text = if g.chance(2) {
        written.json.spaced(&mut g)
    } else {
        written.json.compact()
    };
    for max in LIMITS {
        read_as_written(&written, &text, max);
    }
});

/// The refusal `body` earns under `max`: its code and the index of the
/// message it names, in the order the room checks them.
fn refusal(body: &Body, max: usize) -> Option<(ErrorCode, Option<usize>)> {
    if body.bad_count() {
        return Some((ErrorCode::BadFormat, None));
    }
    body.messages.iter().enumerate().find_map(|(i, message)| {
        let over = message.data.as_ref().is_some_and(|data| data.len() > max);
        let code = if message.flawed_early() {
            ErrorCode::BadFormat
        } else if over {
            ErrorCode::TooLarge
        } else if let Reading::Refused(_) = message.reading {
            ErrorCode::BadFormat
        } else {
            return None;
        };
        Some((code, Some(i)))
    })
}

fn read_as_written(body: &Body, text: &str, max: usize) {
    match (refusal(body, max), parse_publish_body(text, max)) {
        (None, Ok((drafts, batch))) => {
            assert_eq!(batch, body.batch, "{text}");
            assert_eq!(drafts.len(), body.messages.len(), "{text}");
            for (draft, message) in drafts.iter().zip(&body.messages) {
                let Reading::Publish(expected) = &message.reading else {
                    unreachable!("a body without a refusal holds publishes only")
                };
                expected.matches(draft, None, text);
                contract::accepted(draft, max);
            }
        }
        (Some((code, index)), Err(rejection)) => {
            assert_eq!(rejection.code, code, "{rejection:?}: {text}");
            assert_eq!(rejection.reference, None, "{text}");
            let named = rejection.message.starts_with("messages[");
            match index.filter(|_| body.batch) {
                Some(i) => assert!(
                    rejection.message.starts_with(&format!("messages[{i}]: ")),
                    "{rejection:?}: {text}"
                ),
                None => assert!(!named, "{rejection:?}: {text}"),
            }
            contract::refused(&rejection);
        }
        (Some(expected), Ok(_)) => {
            panic!("accepted, not refused {expected:?}, under {max}: {text}")
        }
        (None, Err(rejection)) => panic!("refused under {max}: {rejection:?}: {text}"),
    }
}
