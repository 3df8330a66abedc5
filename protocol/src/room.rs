//! Room names: the one rule that decides which Durable Object a request reaches.
//!
//! The name is part of URLs, Kafka keys and metric labels, so it is restricted
//! to a small, unambiguous alphabet (docs/protocol.md, "HTTP").

use std::fmt;

/// Longest accepted room name, in bytes (the first character plus 127 more).
pub const MAX_ROOM_NAME_LEN: usize = 128;

/// A validated room name: `^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(String);

impl RoomName {
    /// Validates `name`, returning `None` when it breaks the rule.
    pub fn parse(name: &str) -> Option<RoomName> {
        let bytes = name.as_bytes();
        let first_ok = bytes.first().is_some_and(u8::is_ascii_alphanumeric);
        let rest_ok = bytes
            .iter()
            .skip(1)
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        (first_ok && rest_ok && bytes.len() <= MAX_ROOM_NAME_LEN).then(|| RoomName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn accepts_the_spec_alphabet() {
        for ok in ["a", "chat.lobby", "A-b_c:d.e", "0", &"x".repeat(128)] {
            assert!(RoomName::parse(ok).is_some(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for bad in ["", ".a", "-a", "a/b", "a b", "é", "a%2F", &"x".repeat(129)] {
            assert!(RoomName::parse(bad).is_none(), "{bad}");
        }
    }
}
