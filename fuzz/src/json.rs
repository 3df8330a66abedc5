//! Valid JSON written from fuzz bytes, for the targets that must see their
//! parser accept what the grammar allows: values within the documented
//! limits, each token spelled in one of the ways JSON allows (escapes,
//! exponents, `\/`), and whitespace between tokens or none.
//!
//! A [`Json`] keeps every token as written, so the harness knows the compact
//! form of what it wrote without asking the code under test.

use libfuzzer_sys::arbitrary::Unstructured;
use roomcast_protocol::policy::MAX_DEPTH;

/// Choices drawn from fuzz bytes; once the bytes run out every choice is
/// the first one (and every [`Gen::chance`] false), so generation ends.
pub struct Gen<'a>(Unstructured<'a>);

impl<'a> Gen<'a> {
    pub fn new(bytes: &'a [u8]) -> Gen<'a> {
        Gen(Unstructured::new(bytes))
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.0.int_in_range(lo..=hi).unwrap_or(lo)
    }

    /// An index below `len` (at least 1).
    pub fn below(&mut self, len: usize) -> usize {
        self.range(0, len as u64 - 1) as usize
    }

    pub fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[self.below(choices.len())]
    }

    /// True one time in `n`; false once the bytes are used up.
    pub fn chance(&mut self, n: u64) -> bool {
        self.range(0, n - 1) == n - 1
    }

    pub fn u64(&mut self) -> u64 {
        self.range(0, u64::MAX)
    }

    /// Any character, weighted towards the ones a JSON writer or reader
    /// can get wrong: quotes, backslashes, controls, line separators, and
    /// characters of two, three and four bytes.
    pub fn char(&mut self) -> char {
        let c = match self.below(8) {
            0 | 1 => self.range(0x20, 0x7e) as u32,
            2 => self.range(0, 0x1f) as u32,
            3 => self.pick(&['"', '\\', '/', '\n', '\u{7f}']) as u32,
            4 => self.range(0x80, 0x7ff) as u32,
            5 => self.pick(&['\u{2028}', '\u{2029}', '\u{feff}', '\u{fffd}', '\u{ffff}']) as u32,
            6 => self.range(0x800, 0xffff) as u32,
            _ => self.range(0x1_0000, 0x10_ffff) as u32,
        };
        // Surrogate code points are not characters.
        char::from_u32(c).unwrap_or('\u{e000}')
    }

    /// Text of `min..=max` bytes (UTF-8), any characters.
    pub fn text(&mut self, min: usize, max: usize) -> String {
        let target = self.range(min as u64, max as u64) as usize;
        let mut text = String::new();
        while text.len() < target {
            let c = self.char();
            if text.len() + c.len_utf8() <= max {
                text.push(c);
            } else {
                text.push(char::from(self.range(0, 0x7f) as u8));
            }
        }
        text
    }

    /// Text of at most `max` bytes, as long as the bytes keep asking for more.
    pub fn short_text(&mut self, max: usize) -> String {
        let mut text = String::new();
        while self.chance(8) || (text.is_empty() && self.chance(2)) {
            let c = self.char();
            if text.len() + c.len_utf8() > max {
                break;
            }
            text.push(c);
        }
        text
    }

    /// `slice` in an order drawn from the bytes.
    pub fn shuffle<T>(&mut self, slice: &mut [T]) {
        for i in (1..slice.len()).rev() {
            let j = self.below(i + 1);
            slice.swap(i, j);
        }
    }
}

/// A JSON value with every scalar token as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Json {
    /// `null`, `true`, `false`, a number or a string literal, as written.
    Token(String),
    Array(Vec<Json>),
    /// Keys as written (string literals, quotes included).
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The string `value` as a literal, spelled by `g`.
    pub fn string(g: &mut Gen, value: &str) -> Json {
        Json::Token(literal(g, value))
    }

    /// An object of `(key, value)` entries, keys spelled by `g`.
    pub fn object(g: &mut Gen, entries: Vec<(&str, Json)>) -> Json {
        Json::Object(
            entries
                .into_iter()
                .map(|(k, v)| (literal(g, k), v))
                .collect(),
        )
    }

    /// Nesting depth as `policy::depth` counts it: scalars 0.
    pub fn depth(&self) -> usize {
        match self {
            Json::Token(_) => 0,
            Json::Array(items) => 1 + items.iter().map(Json::depth).max().unwrap_or(0),
            Json::Object(entries) => 1 + entries.iter().map(|(_, v)| v.depth()).max().unwrap_or(0),
        }
    }

    /// The text without any whitespace between tokens.
    pub fn compact(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, &mut |_| {});
        out
    }

    /// The text with whitespace drawn from `g` around every token.
    pub fn spaced(&self, g: &mut Gen) -> String {
        let mut out = String::new();
        space(g, &mut out);
        self.write(&mut out, &mut |out| space(g, out));
        out
    }

    /// Writes the tokens, calling `between` after each one.
    fn write(&self, out: &mut String, between: &mut dyn FnMut(&mut String)) {
        match self {
            Json::Token(token) => {
                out.push_str(token);
                between(out);
            }
            Json::Array(items) => {
                out.push('[');
                between(out);
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                        between(out);
                    }
                    item.write(out, between);
                }
                out.push(']');
                between(out);
            }
            Json::Object(entries) => {
                out.push('{');
                between(out);
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                        between(out);
                    }
                    out.push_str(key);
                    between(out);
                    out.push(':');
                    between(out);
                    value.write(out, between);
                }
                out.push('}');
                between(out);
            }
        }
    }
}

/// Whitespace as JSON allows it between tokens: mostly none.
fn space(g: &mut Gen, out: &mut String) {
    if g.chance(3) {
        out.push_str(g.pick(&[" ", "\n", "\t", "\r\n", "\n    ", "  ", "\r"]));
    }
}

/// `value` as a JSON string literal: each character as itself or escaped,
/// as any writer may.
pub fn literal(g: &mut Gen, value: &str) -> String {
    let mut out = String::from('"');
    for c in value.chars() {
        let short = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            '/' if g.chance(2) => Some("\\/"),
            _ => None,
        };
        let must_escape = short.is_some() || (c as u32) < 0x20;
        if must_escape && !g.chance(4) {
            if let Some(short) = short {
                out.push_str(short);
                continue;
            }
        }
        if must_escape || g.chance(6) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                if g.chance(2) {
                    out.push_str(&format!("\\u{unit:04X}"));
                } else {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        } else {
            out.push(c);
        }
    }
    out.push('"');
    out
}

/// A number every JSON reader reads the same way: at most 21 significant
/// digits and a decimal exponent far inside a double's range.
pub fn number(g: &mut Gen) -> String {
    let mut n = String::new();
    if g.chance(3) {
        n.push('-');
    }
    if g.chance(4) {
        n.push('0');
    } else {
        n.push(char::from(b'1' + g.range(0, 8) as u8));
        for _ in 0..g.range(0, 20) {
            n.push(char::from(b'0' + g.range(0, 9) as u8));
        }
    }
    if g.chance(3) {
        n.push('.');
        for _ in 0..g.range(1, 12) {
            n.push(char::from(b'0' + g.range(0, 9) as u8));
        }
    }
    if g.chance(3) {
        n.push(g.pick(&['e', 'E']));
        n.push_str(g.pick(&["", "+", "-"]));
        n.push_str(&g.range(0, 280).to_string());
    }
    n
}

/// Any scalar.
pub fn scalar(g: &mut Gen) -> Json {
    match g.below(6) {
        0 => Json::Token(g.pick(&["null", "true", "false"]).to_owned()),
        1 | 2 => Json::Token(number(g)),
        _ => {
            let text = g.short_text(48);
            Json::string(g, &text)
        }
    }
}

/// A value nested at most `levels` deep.
pub fn value(g: &mut Gen, levels: usize) -> Json {
    if levels == 0 || !g.chance(2) {
        return scalar(g);
    }
    let mut items = Vec::new();
    let object = g.chance(2);
    while items.len() < 6 && (items.is_empty() || g.chance(2)) {
        if items.is_empty() && g.chance(6) {
            break;
        }
        items.push(value(g, levels - 1));
    }
    if object {
        let entries = items
            .into_iter()
            .map(|item| {
                let key = g.short_text(16);
                (literal(g, &key), item)
            })
            .collect();
        Json::Object(entries)
    } else {
        Json::Array(items)
    }
}

/// A message's `data`: any value within the depth limit, sometimes nested
/// exactly to it.
pub fn data(g: &mut Gen) -> Json {
    let mut data = value(g, 4);
    if g.chance(8) {
        data = nest(g, data, MAX_DEPTH);
    }
    data
}

/// `inner` inside arrays and objects until it is `depth` deep.
pub fn nest(g: &mut Gen, mut inner: Json, depth: usize) -> Json {
    while inner.depth() < depth {
        inner = if g.chance(2) {
            Json::object(g, vec![("k", inner)])
        } else {
            Json::Array(vec![inner])
        };
    }
    inner
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the bytes, the text written is JSON, spaced or not, and
    /// means the same both ways.
    #[test]
    fn generated_values_are_json() {
        for seed in 0..500u32 {
            let bytes: Vec<u8> = (0..512u32)
                .map(|i| (i.wrapping_mul(seed | 1).rotate_left(seed % 7) ^ seed) as u8)
                .collect();
            let mut g = Gen::new(&bytes);
            let value = data(&mut g);
            let compact = value.compact();
            let spaced = value.spaced(&mut g);
            let a: serde_json::Value = serde_json::from_str(&compact).unwrap();
            let b: serde_json::Value = serde_json::from_str(&spaced).unwrap();
            assert_eq!(a, b, "{spaced}");
            assert!(value.depth() <= MAX_DEPTH);
            assert_eq!(crate::indent::compact(&spaced), compact);
        }
    }
}
