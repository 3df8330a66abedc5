//! WebSocket client frames: any text, under a small limit (most frames are
//! over it, so the size checks and the 1009 cut-off are exercised) and under
//! the default `MAX_MESSAGE_BYTES` (every frame is parsed).
//!
//! A WebSocket text frame is UTF-8, so bytes that are not are read lossily:
//! every input still reaches the parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast_fuzz::contract;
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
                    if let Some(reference) = reference {
                        assert!(reference.len() <= MAX_REF_LEN, "ref {reference:?}");
                    }
                    contract::accepted(&draft, max);
                }
            }
            Err(rejection) => {
                let over = text.len() > max;
                assert_eq!(rejection.code == ErrorCode::TooLarge, over, "{rejection:?}");
                assert_eq!(
                    rejection.fatal,
                    text.len() > max * FAR_OVER_FACTOR,
                    "{rejection:?}"
                );
                contract::refused(&rejection);
            }
        }
    }
});
