//! Identifiers: message ids, connection ids and room epochs.
//!
//! Message ids are UUIDv7 strings: time-ordered (so logs and Kafka headers
//! sort usefully) and unique without coordination between rooms. Randomness
//! comes from `getrandom`, which uses `crypto.getRandomValues` on Workers,
//! drawn [`POOL_BYTES`] at a time: there each draw is a call out of Wasm,
//! which costs more than making the id.

use std::cell::RefCell;

use uuid::Builder;

/// Random bytes drawn from the platform at once: 64 message ids' worth.
const POOL_BYTES: usize = 640;

thread_local! {
    /// Random bytes not handed out yet: the pool, and how much of it is used.
    static POOL: RefCell<([u8; POOL_BYTES], usize)> = const { RefCell::new(([0; POOL_BYTES], POOL_BYTES)) };
}

/// Random bytes from the platform's secure source, each handed out once.
///
/// Failure means the platform has no entropy source at all, which no caller
/// can recover from.
fn random_bytes<const N: usize>() -> [u8; N] {
    const { assert!(N <= POOL_BYTES) };
    POOL.with_borrow_mut(|(pool, used)| {
        if *used + N > POOL_BYTES {
            getrandom::getrandom(pool).expect("the platform has no secure random source");
            *used = 0;
        }
        let mut bytes = [0u8; N];
        bytes.copy_from_slice(&pool[*used..*used + N]);
        *used += N;
        bytes
    })
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

/// The prefix of the ids the bridge gives Kafka records without a
/// `message-id` header (`kafka:<topic>:<partition>:<offset>`). They are
/// predictable, so only a bridge token may publish an id of this form:
/// anyone else could claim the id of a record before it arrives.
pub const BRIDGE_ID_PREFIX: &str = "kafka:";

/// Is `id` of the form reserved for the bridge?
pub fn reserved_for_bridge(id: &str) -> bool {
    id.starts_with(BRIDGE_ID_PREFIX)
}

/// A short, stable tag naming a subject among a room's sockets, to count a
/// subject's connections: socket tags are short ASCII, subjects are not.
/// FNV-1a over the subject; subjects come from signed tokens, so nobody can
/// pick one to collide with another's.
pub fn subject_tag(sub: &str) -> String {
    let hash = sub.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("s:{hash:016x}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn uuid_v7_is_versioned_and_time_ordered() {
        let a = uuid_v7_from(1_700_000_000_000, [0xff; 10]);
        let b = uuid_v7_from(1_700_000_000_001, [0; 10]);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "7");
        assert!(a < b);
    }

    #[test]
    fn subject_tags_are_short_ascii_and_stable() {
        let tag = subject_tag("Łukasz-東京");
        assert_eq!(tag.len(), 18);
        assert!(tag.is_ascii());
        assert_eq!(tag, subject_tag("Łukasz-東京"));
        assert_ne!(tag, subject_tag("Lukasz-東京"));
        assert!(reserved_for_bridge("kafka:t:0:1") && !reserved_for_bridge("k:1"));
    }

    #[test]
    fn fresh_ids_differ() {
        assert_ne!(message_id(1), message_id(1));
        assert_ne!(conn_id(), conn_id());
        assert!(epoch().starts_with("e_"));
    }

    #[test]
    fn the_pool_hands_out_each_byte_once_and_refills() {
        // Ten pools' worth of ids of two sizes, so draws straddle refills.
        let ids: std::collections::HashSet<String> =
            (0..640).flat_map(|_| [message_id(1), conn_id()]).collect();
        assert_eq!(ids.len(), 1280);
        let randoms: std::collections::HashSet<[u8; 10]> =
            (0..1000).map(|_| random_bytes::<10>()).collect();
        assert_eq!(randoms.len(), 1000);
    }
}
