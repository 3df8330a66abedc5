//! Which bridge instance relays which room: rendezvous (highest random
//! weight) hashing (docs/internals.md, "Registry link").
//!
//! Every instance scores every room and the highest score wins, so all
//! parties agree without coordination, and when an instance joins or leaves
//! only the rooms it wins or held move. The hash is FNV-1a followed by a
//! SplitMix64 finaliser: stable across platforms and releases (unlike std's
//! `DefaultHasher`), which matters because the registry may run a different
//! build than the one that assigned a room last.

/// The weight of `instance` for `room`.
pub fn score(instance: &str, room: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in instance.bytes().chain([0xff]).chain(room.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// The instance that owns `room`, or `None` when no instance is connected.
/// Ties (astronomically unlikely) go to the greater instance id.
pub fn owner<'a, I: AsRef<str>>(room: &str, instances: &'a [I]) -> Option<&'a str> {
    instances
        .iter()
        .map(AsRef::as_ref)
        .max_by_key(|instance| (score(instance, room), *instance))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn rooms() -> Vec<String> {
        (0..3000).map(|n| format!("room-{n}")).collect()
    }

    #[test]
    fn stable_and_order_independent() {
        assert_eq!(score("a", "r"), score("a", "r"));
        assert_ne!(score("a", "r"), score("b", "r"));
        assert_ne!(
            score("ab", "r"),
            score("a", "br"),
            "the separator keeps fields apart"
        );
        let forward = ["a", "b", "c"];
        let backward = ["c", "b", "a"];
        for room in rooms() {
            assert_eq!(owner(&room, &forward), owner(&room, &backward));
        }
        assert_eq!(owner::<&str>("r", &[]), None);
    }

    #[test]
    fn spreads_rooms_evenly() {
        let instances = ["i-1", "i-2", "i-3"];
        for instance in instances {
            let mine = rooms()
                .iter()
                .filter(|r| owner(r, &instances) == Some(instance))
                .count();
            assert!(
                (800..1200).contains(&mine),
                "{instance} owns {mine} of 3000"
            );
        }
    }

    #[test]
    fn only_the_leavers_rooms_move() {
        let before = ["i-1", "i-2", "i-3"];
        let after = ["i-1", "i-3"];
        for room in rooms() {
            let was = owner(&room, &before).unwrap();
            let now = owner(&room, &after).unwrap();
            if was != "i-2" {
                assert_eq!(was, now, "{room} moved although its owner stayed");
            }
        }
    }
}
