//! Frames the bridge sends on its room and registry links, as the worker
//! reads them: refused with `bad_format`, or read into a frame that writes
//! back to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast_fuzz::contract;
use roomcast_protocol::wire::parse_bridge_frame;
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
});
