//! Identifiers: message ids, connection ids and room epochs.
//!
//! Message ids are UUIDv7 strings: time-ordered (so logs and Kafka headers
//! sort usefully) and unique without coordination between rooms. Randomness
//! comes from `getrandom`, which uses `crypto.getRandomValues` on Workers.

use uuid::Builder;

/// Random bytes from the platform's secure source.
///
/// Failure means the platform has no entropy source at all, which no caller
/// can recover from.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).expect("the platform has no secure random source");
    bytes
}

/// A UUIDv7 built from a millisecond timestamp and 10 random bytes.
pub fn uuid_v7_from(now_ms: u64, random: [u8; 10]) -> String {
    Builder::from_unix_timestamp_millis(now_ms, &random)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// A fresh server-assigned message id (UUIDv7).
pub fn message_id(now_ms: u64) -> String {
    uuid_v7_from(now_ms, random_bytes())
}

/// A fresh connection id, `c_` and 16 hex digits.
pub fn conn_id() -> String {
    format!("c_{}", hex(&random_bytes::<8>()))
}

/// A fresh room epoch, `e_` and 16 hex digits. A room draws one when its
/// history starts; a different epoch tells a client its `since` is meaningless.
pub fn epoch() -> String {
    format!("e_{}", hex(&random_bytes::<8>()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_v7_is_versioned_and_time_ordered() {
        let a = uuid_v7_from(1_700_000_000_000, [0xff; 10]);
        let b = uuid_v7_from(1_700_000_000_001, [0; 10]);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "7");
        assert!(a < b);
    }

    #[test]
    fn fresh_ids_differ() {
        assert_ne!(message_id(1), message_id(1));
        assert_ne!(conn_id(), conn_id());
        assert!(epoch().starts_with("e_"));
    }
}
