//! The message policy: what a client frame may look like before it is parsed
//! into a command (docs/protocol.md, "Client frames" error codes `bad_format` and `too_large`).
//!
//! Checks run cheapest first (size, then JSON, then shape) so an abusive
//! client costs the room as little as possible.

use std::borrow::Cow;

/// Deepest nesting of arrays and objects accepted in a frame.
pub const MAX_DEPTH: usize = 32;

/// A frame this many times over `max_message_bytes` closes the connection
/// (1009) instead of just being rejected: no honest client sends one.
pub const FAR_OVER_FACTOR: usize = 4;

/// Consecutive rejected frames after which the connection is closed (1008).
pub const POLICY_STRIKES: u32 = 20;

/// What the size check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeCheck {
    Ok,
    TooLarge,
    FarTooLarge,
}

pub fn check_size(len: usize, max: usize) -> SizeCheck {
    if len <= max {
        SizeCheck::Ok
    } else if len > max.saturating_mul(FAR_OVER_FACTOR) {
        SizeCheck::FarTooLarge
    } else {
        SizeCheck::TooLarge
    }
}

/// Nesting depth of a JSON text: scalars are 0, `[]` and `{}` are 1.
///
/// It scans the text (which the caller already knows is JSON) instead of
/// building a tree of it, so measuring a message costs no allocation, and a
/// hostile document cannot exhaust the stack (serde_json refuses more than
/// 128 levels while reading it anyway).
pub fn depth(json: &str) -> usize {
    let (mut level, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for byte in json.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                level += 1;
                deepest = deepest.max(level);
            }
            b']' | b'}' => level = level.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// `json` (already known to be JSON) without the whitespace between its
/// tokens: the one form a message's `data` is stored and sent in.
///
/// Whitespace outside strings is all a JSON text may add to its value, and a
/// string never holds a raw control character, so the compact text holds no
/// newline at all: a publisher's indentation cannot reach the objects'
/// line-based logs or anything else downstream, and a message costs its
/// value, not its formatting. Borrowed when there is nothing to remove (the
/// common case: clients send `JSON.stringify` output).
pub fn compact(json: &str) -> Cow<'_, str> {
    let mut out: Option<String> = None;
    // Start of the run of bytes kept since the last whitespace removed.
    let mut kept_from = 0;
    let (mut in_string, mut escaped) = (false, false);
    for (i, byte) in json.bytes().enumerate() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            let out = out.get_or_insert_with(|| String::with_capacity(json.len()));
            out.push_str(&json[kept_from..i]);
            kept_from = i + 1;
        } else if byte == b'"' {
            in_string = true;
        }
    }
    match out {
        None => Cow::Borrowed(json),
        Some(mut out) => {
            out.push_str(&json[kept_from..]);
            Cow::Owned(out)
        }
    }
}

/// Whether every JSON reader reads `json` (already known to be JSON) the same
/// way: no number outside the range of a double and no unpaired UTF-16
/// surrogate escape.
///
/// RFC 8259 lets readers refuse both, and common ones do (`serde_json::Value`,
/// Go's `encoding/json` for numbers). The room keeps data exactly as sent and
/// the bridge forwards it to Kafka, so a document only some readers accept
/// would become a poison record downstream; refusing it at the edge keeps the
/// failure with the client that caused it.
pub fn portable(json: &str) -> bool {
    let bytes = json.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        i = match bytes[i] {
            b'"' => match string_end(bytes, i + 1) {
                Some(end) => end,
                None => return false,
            },
            b'-' | b'0'..=b'9' => {
                let end = bytes[i..]
                    .iter()
                    .position(|b| !matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                    .map_or(bytes.len(), |n| i + n);
                // serde_json's own reader (already linked in) refuses what
                // overflows a double; core's float parser would add its tables.
                if serde_json::from_str::<f64>(&json[i..end]).is_err() {
                    return false;
                }
                end
            }
            _ => i + 1,
        };
    }
    true
}

/// The index just past the string starting at `start` (after its opening
/// quote), or `None` if an escape in it names an unpaired surrogate.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return Some(i + 1),
            b'\\' if bytes.get(i + 1) == Some(&b'u') => {
                let unit = hex4(bytes, i + 2)?;
                i += 6;
                if (0xDC00..0xE000).contains(&unit) {
                    return None;
                }
                if (0xD800..0xDC00).contains(&unit) {
                    let low = (bytes.get(i) == Some(&b'\\') && bytes.get(i + 1) == Some(&b'u'))
                        .then(|| hex4(bytes, i + 2))
                        .flatten()?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return None;
                    }
                    i += 6;
                }
            }
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    Some(i)
}

fn hex4(bytes: &[u8], at: usize) -> Option<u16> {
    let digits = std::str::from_utf8(bytes.get(at..at + 4)?).ok()?;
    u16::from_str_radix(digits, 16).ok()
}

/// Counts consecutive policy violations on one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Strikes(pub u32);

impl Strikes {
    /// Records a rejected frame; `true` once the connection has earned a close.
    pub fn violation(&mut self) -> bool {
        self.0 = self.0.saturating_add(1);
        self.0 >= POLICY_STRIKES
    }

    /// An accepted frame forgives earlier mistakes.
    pub fn clear(&mut self) {
        self.0 = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn sizes() {
        assert_eq!(check_size(10, 10), SizeCheck::Ok);
        assert_eq!(check_size(11, 10), SizeCheck::TooLarge);
        assert_eq!(check_size(40, 10), SizeCheck::TooLarge);
        assert_eq!(check_size(41, 10), SizeCheck::FarTooLarge);
    }

    #[test]
    fn depths() {
        assert_eq!(depth("1"), 0);
        assert_eq!(depth("[]"), 1);
        assert_eq!(depth(r#"{"a":[1,{"b":{}}]}"#), 4);
        assert_eq!(depth("[[[]]]"), 3);
        assert_eq!(depth("[[1],[2],{}]"), 2, "siblings are not nested");
        assert_eq!(
            depth(r#"["[[[", "\\\"{{", {}]"#),
            2,
            "brackets in strings do not count"
        );
    }

    #[test]
    fn compact_json() {
        assert!(matches!(compact(r#"{"a":[1,2]}"#), Cow::Borrowed(_)));
        assert_eq!(
            compact("{\n  \"a b\" : [ 1,\t2 ],\r\n  \"c\": \"x \\\" y\\\\\"\n}"),
            r#"{"a b":[1,2],"c":"x \" y\\"}"#
        );
        assert_eq!(compact(" 7 "), "7");
        assert_eq!(compact("\"  \""), "\"  \"", "spaces inside strings stay");
        assert_eq!(
            compact("[\"\\\\\", 1]"),
            r#"["\\",1]"#,
            "an escaped backslash ends"
        );
    }

    #[test]
    fn portable_json() {
        for ok in [
            "1",
            "-0.5e-3",
            "1e308",
            r#"["\ud83d\ude00", "é", "\n\"\\u"]"#,
            r#"{"a":"\u00e9"}"#,
            "12345678901234567890123",
        ] {
            assert!(portable(ok), "{ok}");
        }
        for bad in [
            "2e615",
            "[0,-1,1.5,2e615]",
            "-1e309",
            r#""xx\ud800xx""#,
            r#""\udc00""#,
            r#""\ud800\u0041""#,
            r#"{"k":"\ud83d"}"#,
            r#""\ud800x\udc00""#,
            r#""\ud800xudc00""#,
            r#"["\ud83d\ude00", "\udc00"]"#,
            r#""0123456789\n\udc00""#,
            // A number after a string is read as a number too.
            r#"{"n":1e999}"#,
            r#"["1e999", -1e999]"#,
        ] {
            assert!(!portable(bad), "{bad}");
        }
    }

    #[test]
    fn portable_reads_text_that_is_not_json_without_failing() {
        // Only ever called on JSON, but a string cut short must not make the
        // check read past the end: its verdict is about numbers and
        // surrogates alone.
        for cut in [r#""abc"#, r#"["x", "y"#, r#""\"#] {
            assert!(portable(cut), "{cut}");
        }
        for cut in [r#""\ud800"#, r#""\u00"#] {
            assert!(!portable(cut), "{cut}: no UTF-16 unit, cut or not");
        }
    }

    #[test]
    fn strikes_close_after_the_limit_and_clear() {
        let mut s = Strikes::default();
        for _ in 1..POLICY_STRIKES {
            assert!(!s.violation());
        }
        assert!(s.violation());
        s.clear();
        assert!(!s.violation());
    }
}
