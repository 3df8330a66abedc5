//! The `since` and `limit` query values of `GET /messages` ([`Page::parse`])
//! and the `since` of a WebSocket connect ([`parse_u64`]).
//!
//! Input: a first byte whose low two bits say whether `since` and `limit`
//! are present, then their text separated by the first `&`. The same bytes
//! also choose a query by the grammar (each value absent, empty or any u64
//! in decimal), which must be read as written.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast_fuzz::contract;
use roomcast_fuzz::json::Gen;
use roomcast_protocol::history::{parse_u64, Page, DEFAULT_PAGE, MAX_PAGE};
use roomcast_protocol::ErrorCode;

fuzz_target!(|bytes: &[u8]| {
    let Some((&present, rest)) = bytes.split_first() else {
        return;
    };
    let rest = String::from_utf8_lossy(rest);
    let (since, limit) = rest.split_once('&').unwrap_or((&rest, ""));
    let since = (present & 1 != 0).then_some(since);
    let limit = (present & 2 != 0).then_some(limit);
    // What the documentation promises: absent or empty means the default, a
    // decimal u64 is taken as it is (limit clamped to 1..=MAX_PAGE), anything
    // else is refused.
    let expect = |value: Option<&str>, default: u64| match value {
        None | Some("") => Some(default),
        Some(v) => v.parse::<u64>().ok(),
    };
    match Page::parse(since, limit) {
        Ok(page) => {
            assert_eq!(Some(page.since), expect(since, 0), "{since:?}");
            let wanted = expect(limit, DEFAULT_PAGE).map(|l| l.clamp(1, MAX_PAGE));
            assert_eq!(Some(page.limit), wanted, "{limit:?}");
        }
        Err(refusal) => {
            assert!(
                expect(since, 0).is_none() || expect(limit, DEFAULT_PAGE).is_none(),
                "refused {since:?} {limit:?}: {refusal:?}"
            );
            assert_eq!(refusal.code, ErrorCode::BadRequest, "{refusal:?}");
            contract::http_error(refusal.code, &refusal.message);
        }
    }
    match parse_u64("since", since, 0) {
        Ok(value) => assert_eq!(Some(value), expect(since, 0), "{since:?}"),
        Err(refusal) => {
            assert!(expect(since, 0).is_none(), "refused {since:?}: {refusal:?}");
            assert_eq!(refusal.code, ErrorCode::BadRequest, "{refusal:?}");
            contract::http_error(refusal.code, &refusal.message);
        }
    }

    let mut g = Gen::new(bytes);
    let (since, since_text) = value(&mut g);
    let (limit, limit_text) = value(&mut g);
    let wanted = Page {
        since: since.unwrap_or(0),
        limit: limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE),
    };
    match Page::parse(since_text.as_deref(), limit_text.as_deref()) {
        Ok(page) => assert_eq!(page, wanted, "{since_text:?} {limit_text:?}"),
        Err(refusal) => panic!("refused {since_text:?} {limit_text:?}: {refusal:?}"),
    }
});

/// A query value as a client writes it: absent, empty or a u64 in decimal
/// (near the ends of the range as often as not), with the number it means.
fn value(g: &mut Gen) -> (Option<u64>, Option<String>) {
    match g.below(4) {
        0 => (None, None),
        1 => (None, Some(String::new())),
        _ => {
            let n = match g.below(3) {
                0 => g.range(0, 2 * MAX_PAGE),
                1 => u64::MAX - g.range(0, 2),
                _ => g.u64(),
            };
            (Some(n), Some(n.to_string()))
        }
    }
}
