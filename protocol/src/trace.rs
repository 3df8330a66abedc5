//! W3C trace context: the `traceparent` a publisher may attach to a message.
//!
//! roomcast does not trace anything itself; it carries the publisher's
//! `traceparent` with the message (history, `message` frames, the Kafka
//! header) so that a tracing system on either side can join the spans. Only
//! the version-00 form is accepted, checked strictly, because the value is
//! stored and copied into Kafka headers verbatim: anything else a client
//! sends is refused rather than passed on.
//!
//! Over HTTP the trace context may also come as the request's `traceparent`
//! header ([`inherit`]), which is how HTTP clients that trace send it anyway.

use crate::draft::Draft;

/// Length of a version-00 `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`.
const LEN: usize = 55;

/// Is `value` a well-formed W3C `traceparent` (version 00, lowercase hex,
/// non-zero trace and parent ids)?
pub fn is_traceparent(value: &str) -> bool {
    let b = value.as_bytes();
    if b.len() != LEN || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return false;
    }
    let hex = |range: std::ops::Range<usize>| {
        b[range]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    let nonzero = |range: std::ops::Range<usize>| b[range].iter().any(|c| *c != b'0');
    &b[0..2] == b"00"
        && hex(3..35)
        && hex(36..52)
        && hex(53..55)
        && nonzero(3..35)
        && nonzero(36..52)
}

/// Gives every draft without a `trace` of its own the request's
/// `traceparent` header. A malformed header is ignored, as W3C trace context
/// asks of a receiver (it may come from any hop on the way); a malformed
/// `trace` in the body is the publisher's own mistake and was refused when
/// the body was parsed.
pub fn inherit(drafts: &mut [Draft], header: Option<&str>) {
    let Some(header) = header.map(str::trim).filter(|h| is_traceparent(h)) else {
        return;
    };
    for draft in drafts.iter_mut().filter(|d| d.trace.is_none()) {
        draft.trace = Some(header.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse_publish_body;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn accepts_the_spec_example() {
        assert!(is_traceparent(GOOD));
    }

    #[test]
    fn refuses_every_malformed_form() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b-01",
        ] {
            assert!(!is_traceparent(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_header_fills_in_only_where_the_body_has_no_trace() {
        const OWN: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let body = format!(r#"{{"messages":[{{"data":1}},{{"data":2,"trace":"{OWN}"}}]}}"#);
        let traces = |header: Option<&str>| {
            let (mut drafts, _) = parse_publish_body(&body, 100).unwrap();
            inherit(&mut drafts, header);
            drafts.into_iter().map(|d| d.trace).collect::<Vec<_>>()
        };
        assert_eq!(
            traces(Some(GOOD)),
            [Some(GOOD.to_owned()), Some(OWN.to_owned())]
        );
        for ignored in [None, Some("garbage"), Some("")] {
            assert_eq!(traces(ignored), [None, Some(OWN.to_owned())], "{ignored:?}");
        }
    }
}
