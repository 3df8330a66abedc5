//! The W3C `traceparent` check, against a second implementation written
//! from the format (`00-<32 hex>-<16 hex>-<2 hex>`, lowercase, non-zero
//! ids) in another way: splitting on `-` instead of indexing bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast_protocol::trace::is_traceparent;

fn by_the_format(value: &str) -> bool {
    let hex = |s: &str| s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let nonzero = |s: &str| s.bytes().any(|c| c != b'0');
    match value.split('-').collect::<Vec<_>>().as_slice() {
        [version, trace, parent, flags] => {
            *version == "00"
                && (trace.len(), parent.len(), flags.len()) == (32, 16, 2)
                && hex(trace)
                && hex(parent)
                && hex(flags)
                && nonzero(trace)
                && nonzero(parent)
        }
        _ => false,
    }
}

fuzz_target!(|bytes: &[u8]| {
    let value = String::from_utf8_lossy(bytes);
    assert_eq!(is_traceparent(&value), by_the_format(&value), "{value:?}");
});
