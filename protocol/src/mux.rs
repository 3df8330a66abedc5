//! Several rooms on one connection (docs/protocol.md, "Several rooms on one
//! connection"): the frames a multiplexed connection speaks, the rooms it is
//! subscribed to, and which hub object holds it.
//!
//! A multiplexed connection belongs to no room. It lives on a hub, an object
//! that holds such connections for every room they subscribe to and that
//! each room feeds as it feeds its shards: one batch per hub, whatever the
//! number of subscribers there (docs/internals.md, "Hubs"). What the hub
//! says about a room is what the room says on its own route, with `room` on
//! every frame: a `subscribed` is the room's `welcome` renamed.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::assign::score;
use crate::draft::Draft;
use crate::error::{ErrorCode, Refusal};
use crate::rights::Rights;
use crate::room::RoomName;
use crate::wire::{check_size, parse_client_frame, ClientFrame, Welcome, MAX_REF_LEN};

/// Default of `MAX_ROOMS_PER_CONNECTION`.
pub const DEFAULT_MAX_ROOMS_PER_CONNECTION: usize = 128;

/// Default of `HUB_OBJECTS`: how many hub objects share the multiplexed
/// connections, and so the most requests a room's message costs for them.
pub const DEFAULT_HUB_OBJECTS: u32 = 16;

/// The Durable Object name of hub `index`. Hub names hold a `/`, which no
/// room name does, so a hub's name is never a room's.
pub fn hub_name(index: u32) -> String {
    format!("hub/{index}")
}

/// The hub a new connection goes to: a stable hash of its subject, so
/// subjects spread evenly over the `pool` and each subject's connections
/// share one hub, which can hold their number and their subscribing to
/// the subject's limits (a hash of anything a client can vary would let
/// one subject take its limits once per hub).
pub fn hub_index(subject: &str, pool: u32) -> u32 {
    (score("hub", subject) % u64::from(pool.max(1))) as u32
}

/// One room to subscribe to, and where the client's copy of it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    pub room: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// A parsed frame of a multiplexed connection.
#[derive(Debug, Clone)]
pub enum MuxFrame {
    /// One room (`room`) or several (`rooms`), answered room by room.
    Subscribe {
        rooms: Vec<Resume>,
        reference: Option<String>,
    },
    Unsubscribe {
        room: String,
        reference: Option<String>,
    },
    Publish {
        room: String,
        draft: Draft,
        reference: Option<String>,
    },
    Auth {
        token: String,
    },
}

/// A refused frame, with the room it named when that could be read, so the
/// `error` frame says which room it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct MuxRefusal {
    pub refusal: Refusal,
    pub room: Option<String>,
}

/// The fields only a multiplexed connection's frames have; `data`, `id`,
/// `ref` and the rest are read as on a room's connection.
#[derive(Deserialize)]
struct Addressing<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    room: Option<&'a RawValue>,
    #[serde(borrow, default)]
    rooms: Option<&'a RawValue>,
    #[serde(borrow, default)]
    since: Option<&'a RawValue>,
    #[serde(borrow, default)]
    epoch: Option<&'a RawValue>,
    #[serde(rename = "ref", borrow, default)]
    reference: Option<&'a RawValue>,
}

/// Parses one text frame of a multiplexed connection under the size limit
/// `max_bytes`; a `subscribe` lists at most `max_rooms` rooms.
pub fn parse_mux_frame(
    text: &str,
    max_bytes: usize,
    max_rooms: usize,
) -> Result<MuxFrame, MuxRefusal> {
    // A publish and an auth are read exactly as on a room's connection,
    // size and `ref` included; only a frame too large to read stops here.
    let read = parse_client_frame(text, max_bytes);
    if let Err(refusal) = &read {
        if refusal.code == ErrorCode::TooLarge {
            return Err(MuxRefusal {
                refusal: refusal.clone(),
                room: room_for_errors(text, max_bytes),
            });
        }
    }
    let fields: Addressing<'_> = serde_json::from_str(text).map_err(|e| MuxRefusal {
        refusal: Refusal::new(
            ErrorCode::BadFormat,
            format!("a frame is not a JSON object: {e}"),
        ),
        room: None,
    })?;
    let reference = fields.reference.and_then(string).map(|r| cut(&r));
    let room = fields.room.and_then(string);
    let refused = |code: ErrorCode, message: String| MuxRefusal {
        refusal: Refusal::new(code, message).with_ref(reference.clone()),
        room: room.clone(),
    };
    let kind = fields.kind.and_then(string).unwrap_or_default();
    match (kind.as_str(), read) {
        ("auth", Ok(ClientFrame::Auth { token })) => Ok(MuxFrame::Auth { token }),
        ("publish", Ok(ClientFrame::Publish { draft, reference })) => Ok(MuxFrame::Publish {
            room: named_room(fields.room).map_err(|m| refused(ErrorCode::BadRoom, m))?,
            draft,
            reference,
        }),
        ("publish" | "auth", Err(refusal)) => Err(MuxRefusal { refusal, room }),
        ("subscribe", _) => {
            let rooms = subscriptions(&fields, max_rooms)
                .map_err(|(code, message)| refused(code, message))?;
            Ok(MuxFrame::Subscribe { rooms, reference })
        }
        ("unsubscribe", _) => Ok(MuxFrame::Unsubscribe {
            room: named_room(fields.room).map_err(|m| refused(ErrorCode::BadRoom, m))?,
            reference,
        }),
        ("", _) => Err(refused(ErrorCode::BadFormat, "frame has no type".into())),
        (other, _) => Err(refused(
            ErrorCode::BadFormat,
            format!("unknown frame type {other:?}"),
        )),
    }
}

/// The `room` of a frame refused before it was read (too large), when it
/// can be read at a bounded cost.
fn room_for_errors(text: &str, max_bytes: usize) -> Option<String> {
    check_size(text.len(), max_bytes.saturating_mul(4)).ok()?;
    let fields: Addressing<'_> = serde_json::from_str(text).ok()?;
    fields.room.and_then(string)
}

/// The rooms of a `subscribe`: `room` (with `since` and `epoch`) or
/// `rooms`, each validated.
fn subscriptions(
    fields: &Addressing<'_>,
    max_rooms: usize,
) -> Result<Vec<Resume>, (ErrorCode, String)> {
    let bad = |message: String| (ErrorCode::BadFormat, message);
    let rooms: Vec<Resume> = match (fields.room, fields.rooms) {
        (Some(_), Some(_)) => return Err(bad("subscribe names room or rooms, not both".into())),
        (None, None) => return Err(bad("subscribe needs room or rooms".into())),
        (Some(room), None) => vec![Resume {
            room: string(room).ok_or_else(|| bad("room must be a string".into()))?,
            since: optional(fields.since, "since")?,
            epoch: optional(fields.epoch, "epoch")?,
        }],
        (None, Some(rooms)) => {
            let rooms: Vec<Resume> = serde_json::from_str(rooms.get()).map_err(|_| {
                bad("rooms must be a list of {\"room\",\"since\"?,\"epoch\"?}".into())
            })?;
            if rooms.is_empty() || rooms.len() > max_rooms {
                return Err((
                    ErrorCode::TooManyRooms,
                    format!("rooms must list 1 to {max_rooms} rooms"),
                ));
            }
            rooms
        }
    };
    let mut seen = BTreeSet::new();
    for resume in &rooms {
        if RoomName::parse(&resume.room).is_none() {
            return Err((ErrorCode::BadRoom, bad_room_message(&resume.room)));
        }
        if !seen.insert(resume.room.as_str()) {
            return Err(bad(format!("room {:?} is listed twice", resume.room)));
        }
    }
    Ok(rooms)
}

fn optional<T: serde::de::DeserializeOwned>(
    raw: Option<&RawValue>,
    name: &str,
) -> Result<Option<T>, (ErrorCode, String)> {
    raw.map(|raw| serde_json::from_str(raw.get()))
        .transpose()
        .map_err(|_| {
            (
                ErrorCode::BadFormat,
                format!("{name} has the wrong type (since: a seq, epoch: a string)"),
            )
        })
}

/// The frame's `room`, which must be a valid room name.
fn named_room(raw: Option<&RawValue>) -> Result<String, String> {
    let room = raw
        .and_then(string)
        .ok_or_else(|| "the frame needs a room".to_owned())?;
    match RoomName::parse(&room) {
        Some(_) => Ok(room),
        None => Err(bad_room_message(&room)),
    }
}

fn bad_room_message(room: &str) -> String {
    format!(
        "{:?} is not a room name (^[A-Za-z0-9][A-Za-z0-9._:-]{{0,127}}$)",
        cut(room)
    )
}

fn string(raw: &RawValue) -> Option<String> {
    serde_json::from_str(raw.get()).ok()
}

/// At most [`MAX_REF_LEN`] bytes of `text`, back to a whole character.
fn cut(text: &str) -> String {
    let mut end = text.len().min(MAX_REF_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Why a subscription ended, in `unsubscribed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The client unsubscribed.
    Client,
    /// A refreshed token no longer allows the room.
    Forbidden,
    /// The room ended it (retired or deleted).
    Closed,
}

/// The room's `welcome` as a multiplexed connection's `subscribed`.
pub fn subscribed_frame(welcome: &Welcome) -> String {
    #[derive(Serialize)]
    struct Subscribed<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(flatten)]
        welcome: &'a Welcome,
    }
    serde_json::to_string(&Subscribed {
        kind: "subscribed",
        welcome,
    })
    .expect("a welcome is plain data")
}

/// The first frame on a multiplexed connection.
#[derive(Debug, Clone, Serialize)]
pub struct Connected<'a> {
    pub conn_id: &'a str,
    pub heartbeat_ms: u64,
    pub max_message_bytes: usize,
    pub max_rooms: usize,
    pub exp: u64,
    /// The rooms of the token's `channels`, whose `subscribed` follows at
    /// once: a client resuming one of them knows that this first
    /// `subscribed` (from the head) is not the answer to its own.
    pub channels: &'a [String],
}

impl Connected<'_> {
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Tagged<'b, 'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            #[serde(flatten)]
            connected: &'b Connected<'a>,
        }
        serde_json::to_string(&Tagged {
            kind: "connected",
            connected: self,
        })
        .expect("plain data")
    }
}

pub fn unsubscribed_frame(room: &str, reason: Reason) -> String {
    serde_json::json!({"type": "unsubscribed", "room": room, "reason": reason}).to_string()
}

/// The rooms one connection is subscribed to, at most `limit` of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rooms {
    rooms: BTreeSet<String>,
    limit: usize,
}

impl Rooms {
    pub fn new(limit: usize) -> Rooms {
        Rooms {
            rooms: BTreeSet::new(),
            limit,
        }
    }

    /// Whether the connection, holding `rights`, may subscribe to `room`
    /// now, or the refusal for that room alone. A room it holds already
    /// may be subscribed again (from another `since`): that is how a room
    /// of the token's `channels`, subscribed from its head at connect,
    /// resumes.
    pub fn admit(&self, rights: &Rights, room: &str) -> Result<(), Refusal> {
        if RoomName::parse(room).is_none() {
            return Err(Refusal::new(ErrorCode::BadRoom, bad_room_message(room)));
        }
        if !rights.can_subscribe(room) {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                format!("the token does not allow room {room:?}"),
            ));
        }
        if !self.rooms.contains(room) && self.rooms.len() >= self.limit {
            return Err(Refusal::new(
                ErrorCode::TooManyRooms,
                format!("a connection holds at most {} rooms", self.limit),
            ));
        }
        Ok(())
    }

    pub fn insert(&mut self, room: &str) {
        self.rooms.insert(room.to_owned());
    }

    pub fn remove(&mut self, room: &str) -> bool {
        self.rooms.remove(room)
    }

    pub fn contains(&self, room: &str) -> bool {
        self.rooms.contains(room)
    }

    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.rooms.iter().map(String::as_str)
    }

    /// The rooms `rights` (a refreshed token's) no longer allow, which it
    /// removes: each ends with `unsubscribed … forbidden`.
    pub fn revoke(&mut self, rights: &Rights) -> Vec<String> {
        let revoked: Vec<String> = self
            .rooms
            .iter()
            .filter(|room| !rights.can_subscribe(room))
            .cloned()
            .collect();
        for room in &revoked {
            self.rooms.remove(room);
        }
        revoked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const MAX: usize = 1024;

    fn parse(text: &str) -> Result<MuxFrame, MuxRefusal> {
        parse_mux_frame(text, MAX, 4)
    }

    fn rights(rooms: &[&str]) -> Rights {
        Rights {
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
            ..Rights::default()
        }
    }

    #[test]
    fn subscribe_names_one_room_with_its_resume_or_several() {
        let Ok(MuxFrame::Subscribe { rooms, reference }) =
            parse(r#"{"type":"subscribe","room":"a","since":4,"epoch":"e1","ref":"r"}"#)
        else {
            panic!("one room");
        };
        assert_eq!(reference.as_deref(), Some("r"));
        assert_eq!(
            rooms,
            vec![Resume {
                room: "a".into(),
                since: Some(4),
                epoch: Some("e1".into())
            }]
        );
        let Ok(MuxFrame::Subscribe { rooms, .. }) =
            parse(r#"{"type":"subscribe","rooms":[{"room":"a"},{"room":"b","since":2}]}"#)
        else {
            panic!("two rooms");
        };
        assert_eq!(rooms.len(), 2);
        assert_eq!(rooms[1].since, Some(2));
    }

    #[test]
    fn a_bad_subscribe_is_refused_with_its_code_and_room() {
        let cases = [
            (r#"{"type":"subscribe"}"#, ErrorCode::BadFormat),
            (r#"{"type":"subscribe","room":"a/b"}"#, ErrorCode::BadRoom),
            (
                r#"{"type":"subscribe","room":"a","since":"x"}"#,
                ErrorCode::BadFormat,
            ),
            (
                r#"{"type":"subscribe","room":"a","rooms":[]}"#,
                ErrorCode::BadFormat,
            ),
            (
                r#"{"type":"subscribe","rooms":[]}"#,
                ErrorCode::TooManyRooms,
            ),
            (
                r#"{"type":"subscribe","rooms":[{"room":"a"},{"room":"b"},{"room":"c"},{"room":"d"},{"room":"e"}]}"#,
                ErrorCode::TooManyRooms,
            ),
            (
                r#"{"type":"subscribe","rooms":[{"room":"a"},{"room":"a"}]}"#,
                ErrorCode::BadFormat,
            ),
            (
                r#"{"type":"subscribe","rooms":[{"room":"é"}]}"#,
                ErrorCode::BadRoom,
            ),
            (r#"{"type":"subscribe","rooms":"a"}"#, ErrorCode::BadFormat),
        ];
        for (text, code) in cases {
            let refused = parse(text).expect_err(text);
            assert_eq!(refused.refusal.code, code, "{text}");
        }
        let refused = parse(r#"{"type":"subscribe","room":"a","since":-1,"ref":"r"}"#).unwrap_err();
        assert_eq!(refused.room.as_deref(), Some("a"));
        assert_eq!(refused.refusal.reference.as_deref(), Some("r"));
    }

    #[test]
    fn publish_names_its_room_and_is_read_as_on_a_room() {
        let Ok(MuxFrame::Publish {
            room,
            draft,
            reference,
        }) = parse(r#"{"type":"publish","room":"a","data":{ "x" : 1 },"ref":"p1"}"#)
        else {
            panic!("a publish");
        };
        assert_eq!((room.as_str(), reference.as_deref()), ("a", Some("p1")));
        assert_eq!(draft.data.get(), r#"{"x":1}"#);
        let no_room = parse(r#"{"type":"publish","data":1}"#).unwrap_err();
        assert_eq!(no_room.refusal.code, ErrorCode::BadRoom);
        let no_data = parse(r#"{"type":"publish","room":"a","ref":"p2"}"#).unwrap_err();
        assert_eq!(no_data.refusal.code, ErrorCode::BadFormat);
        assert_eq!(no_data.room.as_deref(), Some("a"));
        assert_eq!(no_data.refusal.reference.as_deref(), Some("p2"));
        let big = format!(
            r#"{{"type":"publish","room":"a","data":"{}"}}"#,
            "x".repeat(MAX)
        );
        let too_large = parse(&big).unwrap_err();
        assert_eq!(too_large.refusal.code, ErrorCode::TooLarge);
        assert_eq!(too_large.room.as_deref(), Some("a"));
    }

    #[test]
    fn unsubscribe_auth_and_the_rest() {
        assert!(matches!(
            parse(r#"{"type":"unsubscribe","room":"a"}"#),
            Ok(MuxFrame::Unsubscribe { room, .. }) if room == "a"
        ));
        assert!(matches!(
            parse(r#"{"type":"auth","token":"t"}"#),
            Ok(MuxFrame::Auth { token }) if token == "t"
        ));
        for text in [
            r#"{"type":"nope","room":"a"}"#,
            r#"{}"#,
            "[1]",
            "nope",
            r#"{"type":"auth"}"#,
        ] {
            assert_eq!(
                parse(text).unwrap_err().refusal.code,
                ErrorCode::BadFormat,
                "{text}"
            );
        }
    }

    #[test]
    fn subscribed_is_the_welcome_renamed() {
        let welcome = Welcome {
            room: "a".into(),
            conn_id: "c".into(),
            epoch: "e".into(),
            head: 3,
            recovered: true,
            heartbeat_ms: 1,
            max_message_bytes: 2,
            rate: crate::wire::RateInfo {
                per_sec: 3,
                burst: 4,
            },
            exp: 5,
            cursor: None,
            catch_up: None,
        };
        let frame: Value = serde_json::from_str(&subscribed_frame(&welcome)).unwrap();
        assert_eq!(frame["type"], "subscribed");
        assert_eq!(
            (frame["room"].as_str(), frame["head"].as_u64()),
            (Some("a"), Some(3))
        );
        assert_eq!(
            serde_json::from_str::<Value>(&unsubscribed_frame("a", Reason::Forbidden)).unwrap(),
            json!({"type":"unsubscribed","room":"a","reason":"forbidden"})
        );
    }

    #[test]
    fn rooms_refuse_what_the_token_or_the_limit_does_not_allow() {
        let mut rooms = Rooms::new(2);
        let token = rights(&["a", "b", "c.*"]);
        assert_eq!(
            rooms.admit(&token, "x").unwrap_err().code,
            ErrorCode::Forbidden
        );
        assert_eq!(
            rooms.admit(&token, "a/b").unwrap_err().code,
            ErrorCode::BadRoom
        );
        rooms.admit(&token, "a").unwrap();
        rooms.insert("a");
        rooms.insert("c.1");
        assert_eq!(
            rooms.admit(&token, "b").unwrap_err().code,
            ErrorCode::TooManyRooms
        );
        rooms
            .admit(&token, "a")
            .expect("a room held may be subscribed again");
        assert!(rooms.remove("a") && !rooms.remove("a"));
        rooms.admit(&token, "b").unwrap();
    }

    #[test]
    fn hubs_are_named_apart_from_rooms_and_share_the_subjects() {
        assert!(RoomName::parse(&hub_name(3)).is_none());
        let mut per_hub = [0u32; 8];
        for i in 0..8000 {
            per_hub[hub_index(&format!("user-{i}"), 8) as usize] += 1;
        }
        assert!(
            per_hub.iter().all(|n| (800..1200).contains(n)),
            "{per_hub:?}"
        );
        assert_eq!(hub_index("alice", 8), hub_index("alice", 8));
        assert_eq!(hub_index("alice", 0), 0);
    }

    proptest! {
        /// A refresh removes exactly the rooms the new token no longer
        /// allows, and the rest stay subscribed.
        #[test]
        fn revoke_removes_exactly_what_the_new_rights_forbid(
            held in proptest::collection::btree_set("[a-d]{1,2}", 0..12),
            allowed in proptest::collection::vec("[a-d]{1,2}\\*?", 0..4),
        ) {
            let mut rooms = Rooms::new(64);
            for room in &held {
                rooms.insert(room);
            }
            let rights = Rights { rooms: allowed, ..Rights::default() };
            let revoked = rooms.revoke(&rights);
            for room in &held {
                prop_assert_eq!(rooms.contains(room), rights.can_subscribe(room));
                prop_assert_eq!(revoked.contains(room), !rights.can_subscribe(room));
            }
            prop_assert_eq!(rooms.len() + revoked.len(), held.len());
        }

        /// Whatever a client sends, parsing answers and never panics; an
        /// accepted subscribe lists valid, distinct rooms within the limit.
        #[test]
        fn any_frame_is_answered(text in ".{0,200}") {
            if let Ok(MuxFrame::Subscribe { rooms, .. }) = parse(&text) {
                prop_assert!(!rooms.is_empty() && rooms.len() <= 4);
                prop_assert!(rooms.iter().all(|r| RoomName::parse(&r.room).is_some()));
            }
        }
    }
}
