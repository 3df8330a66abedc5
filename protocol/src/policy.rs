//! The message policy: what a client frame may look like before it is parsed
//! into a command (SPEC section 3 error codes `bad_format` and `too_large`).
//!
//! Checks run cheapest first (size, then JSON, then shape) so an abusive
//! client costs the room as little as possible.

use serde_json::Value;

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

/// Nesting depth of a JSON value: scalars are 0, `[]` and `{}` are 1.
///
/// Iterative, so a hostile document cannot exhaust the stack here (serde_json
/// already refuses more than 128 levels while parsing).
pub fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, above)) = stack.pop() {
        match v {
            Value::Array(items) => {
                deepest = deepest.max(above + 1);
                stack.extend(items.iter().map(|c| (c, above + 1)));
            }
            Value::Object(map) => {
                deepest = deepest.max(above + 1);
                stack.extend(map.values().map(|c| (c, above + 1)));
            }
            _ => {}
        }
    }
    deepest
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
    use serde_json::json;

    #[test]
    fn sizes() {
        assert_eq!(check_size(10, 10), SizeCheck::Ok);
        assert_eq!(check_size(11, 10), SizeCheck::TooLarge);
        assert_eq!(check_size(40, 10), SizeCheck::TooLarge);
        assert_eq!(check_size(41, 10), SizeCheck::FarTooLarge);
    }

    #[test]
    fn depths() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!([])), 1);
        assert_eq!(depth(&json!({"a":[1,{"b":{}}]})), 4);
        assert_eq!(depth(&json!([[[]]])), 3);
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
