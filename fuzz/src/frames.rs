//! Client frames and HTTP publish bodies written from fuzz bytes by the
//! grammar of docs/protocol.md ("Client frames", "HTTP"), each with what a
//! reader must make of it: the fields as written (`data` in its compact
//! form), or, for one with a single flaw, the refusal.
//!
//! Fields within the limits are drawn right up to them (`ref` up to 64
//! bytes, `id` 1 to 128 bytes, `data` nested up to 32 levels, batches of
//! up to 500), and a flaw just past them, so a parser that measures in the
//! wrong unit or refuses what it should take is caught both ways.

use roomcast_protocol::draft::{Draft, KafkaPosition};
use roomcast_protocol::policy::MAX_DEPTH;
use roomcast_protocol::wire::{MAX_BATCH, MAX_ID_LEN, MAX_REF_LEN};

use crate::json::{self, Gen, Json};

/// The one thing wrong with a frame or message; every one of them is a
/// `bad_format` refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    EmptyId,
    LongId,
    IdNotString,
    LongRef,
    BadTrace,
    NoData,
    TooDeep,
    Unportable,
    TokenNotString,
    /// `kafka` is read after the size check, so a message over the limit is
    /// refused as `too_large` first.
    BadKafka,
}

const FRAME_FLAWS: [Flaw; 8] = [
    Flaw::EmptyId,
    Flaw::LongId,
    Flaw::IdNotString,
    Flaw::LongRef,
    Flaw::BadTrace,
    Flaw::NoData,
    Flaw::TooDeep,
    Flaw::Unportable,
];

const BODY_FLAWS: [Flaw; 8] = [
    Flaw::EmptyId,
    Flaw::LongId,
    Flaw::IdNotString,
    Flaw::BadTrace,
    Flaw::NoData,
    Flaw::TooDeep,
    Flaw::Unportable,
    Flaw::BadKafka,
];

/// What a publish must be read as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The compact form of the `data` written.
    pub data: String,
    pub id: Option<String>,
    pub reference: Option<String>,
    pub trace: Option<String>,
    pub kafka: Option<KafkaPosition>,
}

impl Expected {
    /// Asserts that `draft` (and the frame's `ref`) hold what was written.
    pub fn matches(&self, draft: &Draft, reference: Option<&str>, text: &str) {
        assert_eq!(draft.data.get(), self.data, "data of {text}");
        assert_eq!(draft.id, self.id, "id of {text}");
        assert_eq!(reference, self.reference.as_deref(), "ref of {text}");
        assert_eq!(draft.trace, self.trace, "trace of {text}");
        assert_eq!(draft.kafka, self.kafka, "kafka of {text}");
    }
}

/// What reading a frame or message must give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    Publish(Expected),
    Auth {
        token: String,
    },
    /// A `bad_format` refusal for this flaw.
    Refused(Flaw),
}

/// A frame or message object as written.
#[derive(Debug, Clone)]
pub struct Written {
    pub json: Json,
    pub reading: Reading,
    /// The compact form of the `data` written, if any.
    pub data: Option<String>,
    /// The string `ref` the frame carries, valid or not: a refusal names it.
    pub reference: Option<String>,
}

impl Written {
    /// The `ref` an error about this frame carries: as much of it as fits
    /// in [`MAX_REF_LEN`] bytes without splitting a character.
    pub fn echoed_ref(&self) -> Option<String> {
        let reference = self.reference.as_deref()?;
        let end = reference
            .char_indices()
            .map(|(at, c)| at + c.len_utf8())
            .take_while(|end| *end <= MAX_REF_LEN)
            .last()
            .unwrap_or(0);
        Some(reference[..end].to_owned())
    }

    /// Its refusal is decided before the size of `data` is.
    pub fn flawed_early(&self) -> bool {
        matches!(self.reading, Reading::Refused(flaw) if flaw != Flaw::BadKafka)
    }
}

/// A WebSocket client frame: mostly `publish`, sometimes `auth`.
pub fn client_frame(g: &mut Gen) -> Written {
    if g.chance(6) {
        auth(g)
    } else {
        message(g, true)
    }
}

/// One message of an HTTP body (single or batch form).
pub fn body_message(g: &mut Gen) -> Written {
    message(g, false)
}

/// An HTTP publish body as written, with its messages.
#[derive(Debug, Clone)]
pub struct Body {
    pub json: Json,
    pub messages: Vec<Written>,
    pub batch: bool,
}

impl Body {
    /// Whether the batch holds a number of messages the API refuses.
    pub fn bad_count(&self) -> bool {
        self.batch && !(1..=MAX_BATCH).contains(&self.messages.len())
    }
}

/// A body: one message, or `{"messages":[...]}` of a few messages, or of
/// exactly none, [`MAX_BATCH`] or one more small ones.
pub fn body(g: &mut Gen) -> Body {
    if !g.chance(2) {
        let message = body_message(g);
        return Body {
            json: message.json.clone(),
            messages: vec![message],
            batch: false,
        };
    }
    let messages: Vec<Written> = if g.chance(16) {
        let count = g.pick(&[0, MAX_BATCH, MAX_BATCH + 1]);
        (0..count).map(|i| small_message(g, i)).collect()
    } else {
        let mut messages = vec![body_message(g)];
        while messages.len() < 6 && g.chance(2) {
            messages.push(body_message(g));
        }
        messages
    };
    let items = Json::Array(messages.iter().map(|m| m.json.clone()).collect());
    let mut entries = vec![("messages", items)];
    extras(g, &mut entries);
    g.shuffle(&mut entries);
    Body {
        json: Json::object(g, entries),
        messages,
        batch: true,
    }
}

/// `{"data":<i>}`, for batches at the count limit.
fn small_message(g: &mut Gen, i: usize) -> Written {
    let data = Json::Token(i.to_string());
    Written {
        json: Json::object(g, vec![("data", data)]),
        reading: Reading::Publish(Expected {
            data: i.to_string(),
            id: None,
            reference: None,
            trace: None,
            kafka: None,
        }),
        data: Some(i.to_string()),
        reference: None,
    }
}

fn auth(g: &mut Gen) -> Written {
    let token = g.text(0, 200);
    let (value, reading) = if g.chance(6) {
        // Any JSON but a string: `null`, a number, a list or an object.
        let value = match json::value(g, 1) {
            Json::Token(t) if t.starts_with('"') => Json::Token("7".into()),
            other => other,
        };
        (value, Reading::Refused(Flaw::TokenNotString))
    } else {
        (Json::string(g, &token), Reading::Auth { token })
    };
    let mut entries = vec![("type", Json::string(g, "auth")), ("token", value)];
    let reference = optional(g, &mut entries, "ref", |g| g.text(0, MAX_REF_LEN));
    extras(g, &mut entries);
    g.shuffle(&mut entries);
    Written {
        json: Json::object(g, entries),
        reading,
        data: None,
        reference,
    }
}

/// A `publish` frame (`frame`) or a message of an HTTP body.
fn message(g: &mut Gen, frame: bool) -> Written {
    let flaw = g
        .chance(4)
        .then(|| g.pick(if frame { &FRAME_FLAWS } else { &BODY_FLAWS }));
    let mut entries: Vec<(&str, Json)> = Vec::new();
    if frame {
        entries.push(("type", Json::string(g, "publish")));
    }

    let data = match flaw {
        Some(Flaw::TooDeep) => {
            let inner = json::value(g, 2);
            json::nest(g, inner, MAX_DEPTH + 1)
        }
        Some(Flaw::Unportable) => unportable(g),
        _ => json::data(g),
    };
    let compact = data.compact();
    if flaw != Some(Flaw::NoData) {
        entries.push(("data", data));
    }

    let id = match flaw {
        Some(Flaw::EmptyId) => {
            entries.push(("id", Json::string(g, "")));
            None
        }
        Some(Flaw::LongId) => {
            let id = g.text(MAX_ID_LEN + 1, MAX_ID_LEN + 16);
            entries.push(("id", Json::string(g, &id)));
            None
        }
        Some(Flaw::IdNotString) => {
            entries.push(("id", Json::Token(json::number(g))));
            None
        }
        _ => optional(g, &mut entries, "id", |g| g.text(1, MAX_ID_LEN)),
    };

    let reference = if !frame {
        None
    } else if flaw == Some(Flaw::LongRef) {
        let reference = g.text(MAX_REF_LEN + 1, MAX_REF_LEN + 16);
        entries.push(("ref", Json::string(g, &reference)));
        Some(reference)
    } else {
        optional(g, &mut entries, "ref", |g| g.text(0, MAX_REF_LEN))
    };

    let trace = if flaw == Some(Flaw::BadTrace) {
        let trace = bad_traceparent(g);
        entries.push(("trace", Json::string(g, &trace)));
        None
    } else {
        optional(g, &mut entries, "trace", traceparent)
    };

    let kafka = if frame {
        None
    } else if flaw == Some(Flaw::BadKafka) {
        let bad = bad_kafka(g);
        entries.push(("kafka", bad));
        None
    } else if g.chance(3) {
        let position = KafkaPosition {
            topic: g.short_text(40),
            partition: g.range(0, u32::MAX.into()) as u32 as i32,
            offset: g.u64() as i64,
        };
        let mut fields = vec![
            ("topic", Json::string(g, &position.topic)),
            ("partition", Json::Token(position.partition.to_string())),
            ("offset", Json::Token(position.offset.to_string())),
        ];
        extras(g, &mut fields);
        g.shuffle(&mut fields);
        entries.push(("kafka", Json::object(g, fields)));
        Some(position)
    } else {
        if g.chance(4) {
            entries.push(("kafka", Json::Token("null".into())));
        }
        None
    };

    extras(g, &mut entries);
    g.shuffle(&mut entries);
    Written {
        json: Json::object(g, entries),
        reading: match flaw {
            Some(flaw) => Reading::Refused(flaw),
            None => Reading::Publish(Expected {
                data: compact.clone(),
                id,
                reference: reference.clone(),
                trace,
                kafka,
            }),
        },
        data: (flaw != Some(Flaw::NoData)).then_some(compact),
        reference,
    }
}

/// An optional string field: absent, `null`, or a value from `make`.
fn optional(
    g: &mut Gen,
    entries: &mut Vec<(&str, Json)>,
    name: &'static str,
    make: impl FnOnce(&mut Gen) -> String,
) -> Option<String> {
    match g.below(4) {
        0 => None,
        1 => {
            entries.push((name, Json::Token("null".into())));
            None
        }
        _ => {
            let value = make(g);
            entries.push((name, Json::string(g, &value)));
            Some(value)
        }
    }
}

/// Fields no reader knows, which every reader ignores.
fn extras(g: &mut Gen, entries: &mut Vec<(&str, Json)>) {
    const NAMES: [&str; 4] = ["x", "x-note", "Type", "DATA"];
    while g.chance(4) {
        let value = json::value(g, 3);
        entries.push((g.pick(&NAMES), value));
    }
}

/// A W3C `traceparent`: version 00, non-zero trace and parent ids.
pub fn traceparent(g: &mut Gen) -> String {
    let hex = |g: &mut Gen, len: usize| -> String {
        let mut digits: String = (0..len)
            .map(|_| char::from(b"0123456789abcdef"[g.below(16)]))
            .collect();
        if digits.bytes().all(|b| b == b'0') {
            digits.replace_range(len - 1.., "1");
        }
        digits
    };
    let trace = hex(g, 32);
    let parent = hex(g, 16);
    let flags = hex(g, 2);
    format!("00-{trace}-{parent}-{flags}")
}

/// A value that looks like a `traceparent` and is not one.
fn bad_traceparent(g: &mut Gen) -> String {
    let good = traceparent(g);
    match g.below(5) {
        0 => good.replacen("00-", "ff-", 1),
        1 => format!("00-{}-{}", "0".repeat(32), &good[36..]),
        2 => good[..good.len() - 1].to_owned(),
        3 => format!("{}A{}", &good[..3], &good[4..]),
        _ => format!("{good}-00"),
    }
}

/// `data` only some JSON readers read: a number past a double's range or
/// an unpaired surrogate escape.
fn unportable(g: &mut Gen) -> Json {
    let bad = g.pick(&[
        "2e615",
        "-1e309",
        "1797693134862315708145274237317043567981e270",
        "\"\\ud800\"",
        "\"x\\udc00\"",
        "\"\\ud83d\\u0041\"",
    ]);
    let bad = Json::Token(bad.to_owned());
    if g.chance(2) {
        Json::Array(vec![json::scalar(g), bad])
    } else {
        bad
    }
}

/// A `kafka` field without its documented shape.
fn bad_kafka(g: &mut Gen) -> Json {
    let topic = Json::string(g, "t");
    match g.below(4) {
        0 => Json::object(
            g,
            vec![("topic", topic), ("offset", Json::Token("9".into()))],
        ),
        1 => Json::object(
            g,
            vec![
                ("topic", topic),
                ("partition", Json::Token("2147483648".into())),
                ("offset", Json::Token("9".into())),
            ],
        ),
        2 => Json::object(
            g,
            vec![
                ("topic", Json::Token("7".into())),
                ("partition", Json::Token("0".into())),
                ("offset", Json::Token("9".into())),
            ],
        ),
        _ => Json::Array(vec![topic]),
    }
}
