//! HTTP publish bodies (`POST /v1/rooms/{room}/messages`): one message or a
//! batch, under a limit small enough that many messages are over it and
//! under the default `MAX_MESSAGE_BYTES`.
//!
//! `req.text()` hands the room a string, so bytes that are not UTF-8 are read
//! lossily: every input still reaches the parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast_fuzz::contract;
use roomcast_protocol::wire::{parse_publish_body, MAX_BATCH};

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
});
