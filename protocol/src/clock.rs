//! Wall-clock time in milliseconds since the Unix epoch.
//!
//! Every rule in this crate takes `now_ms` as an argument so it can be tested
//! with a fixed clock; only the adapters call [`now_ms`]. On `wasm32` the
//! standard library has no clock, so the JavaScript `Date` is used (inside a
//! Worker it only advances across I/O, which is what the runtime intends).

/// Milliseconds since the Unix epoch.
#[cfg(target_arch = "wasm32")]
pub fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

/// Milliseconds since the Unix epoch.
#[cfg(not(target_arch = "wasm32"))]
pub fn now_ms() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn clock_is_after_2024() {
        assert!(super::now_ms() > 1_704_067_200_000);
    }
}
