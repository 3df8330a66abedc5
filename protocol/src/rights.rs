//! What a token lets its holder do: room patterns and the bridge role.
//!
//! A pattern is an exact room name or a prefix ending in `*` (docs/protocol.md, "Tokens").
//! Matching is a plain string comparison, so it is cheap enough to run on
//! every publish.

use serde::{Deserialize, Serialize};

/// Does `pattern` cover `room`? `*` alone matches everything; `chat.*` matches
/// every name starting with `chat.`; anything else must be equal.
pub fn pattern_matches(pattern: &str, room: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => room.starts_with(prefix),
        None => pattern == room,
    }
}

/// The rights carried by a verified token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rights {
    /// Patterns of rooms the holder may subscribe to (join, read history, stats).
    pub rooms: Vec<String>,
    /// Patterns of rooms the holder may publish to.
    pub publish: Vec<String>,
    /// The bridge's service token: may use the bridge links and publish anywhere.
    pub bridge: bool,
    /// Patterns of rooms where the holder appears as a member and sees the
    /// others. Defaulted so that rights saved before presence existed (in
    /// open sockets' attachments) still read, as rights without it.
    #[serde(default)]
    pub presence: Vec<String>,
    /// Rooms (exact names) a multiplexed connection is subscribed to at
    /// connect, the token's `channels` claim: the issuer listing a room
    /// there lets the holder subscribe to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
}

impl Rights {
    pub fn can_subscribe(&self, room: &str) -> bool {
        self.bridge
            || self.rooms.iter().any(|p| pattern_matches(p, room))
            || self.channels.iter().any(|c| c == room)
    }

    pub fn can_publish(&self, room: &str) -> bool {
        self.bridge || self.publish.iter().any(|p| pattern_matches(p, room))
    }

    pub fn can_see_presence(&self, room: &str) -> bool {
        self.bridge || self.presence.iter().any(|p| pattern_matches(p, room))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn patterns() {
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("chat.*", "chat.lobby"));
        assert!(pattern_matches("chat.*", "chat."));
        assert!(!pattern_matches("chat.*", "chat"));
        assert!(!pattern_matches("chat.*", "chatter"));
        assert!(pattern_matches("exact", "exact"));
        assert!(!pattern_matches("exact", "exact2"));
        assert!(!pattern_matches("", "a"));
    }

    #[test]
    fn bridge_publishes_anywhere() {
        let rights = Rights {
            bridge: true,
            ..Rights::default()
        };
        assert!(rights.can_publish("x") && rights.can_subscribe("y"));
        let user = Rights {
            rooms: vec!["a.*".into()],
            publish: vec![],
            bridge: false,
            presence: vec![],
            channels: vec![],
        };
        assert!(user.can_subscribe("a.b") && !user.can_publish("a.b"));
    }

    #[test]
    fn presence_follows_its_own_patterns() {
        let user = Rights {
            rooms: vec!["*".into()],
            publish: vec!["*".into()],
            presence: vec!["team.*".into()],
            ..Rights::default()
        };
        assert!(user.can_see_presence("team.a"));
        assert!(
            !user.can_see_presence("lobby"),
            "subscribe and publish rights do not grant presence"
        );
        let bridge = Rights {
            bridge: true,
            ..Rights::default()
        };
        assert!(bridge.can_see_presence("anything"));
        assert!(!Rights::default().can_see_presence("team.a"));
    }

    #[test]
    fn a_channel_allows_subscribing_to_that_room_alone() {
        let user = Rights {
            channels: vec!["news".into()],
            ..Rights::default()
        };
        assert!(user.can_subscribe("news"));
        assert!(!user.can_subscribe("news.sport") && !user.can_publish("news"));
    }

    #[test]
    fn rights_saved_before_presence_still_read() {
        let old: Rights =
            serde_json::from_str(r#"{"rooms":["a.*"],"publish":["a.b"],"bridge":false}"#).unwrap();
        assert_eq!(
            old,
            Rights {
                rooms: vec!["a.*".into()],
                publish: vec!["a.b".into()],
                bridge: false,
                presence: vec![],
                channels: vec![],
            }
        );
        assert!(!old.can_see_presence("a.b"));
    }
}
