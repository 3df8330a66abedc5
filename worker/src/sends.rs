//! The worker's sends, made from JavaScript (`worker/js/sends.js`): a
//! broadcast with its publisher's ack, a shard's or a hub's batch, or a replay to one
//! socket is one call out of Wasm, where a send per socket and frame costs
//! several times what the send itself does. [`Frames`] gathers the frames
//! of one call.

use std::ops::Deref;

use wasm_bindgen::prelude::*;
use worker::{Result, State, WebSocket};

#[wasm_bindgen(module = "/js/sends.js")]
extern "C" {
    #[wasm_bindgen(js_name = broadcast)]
    fn js_broadcast(
        state: &JsValue,
        tag: &str,
        frames: &str,
        ack: &JsValue,
        ack_frames: &str,
    ) -> u32;

    #[wasm_bindgen(js_name = broadcastTo)]
    fn js_broadcast_to(sockets: &js_sys::Array, frames: &str) -> u32;

    #[wasm_bindgen(js_name = sendEach, catch)]
    fn js_send_each(ws: &JsValue, frames: &str) -> std::result::Result<(), JsValue>;
}

/// What separates frames sent in one call: JSON text never holds a raw
/// control character, so no frame contains it.
const SEPARATOR: char = '\u{1e}';

/// Frames sent in one call, in order.
#[derive(Default)]
pub struct Frames(String);

impl Frames {
    pub fn push(&mut self, frame: &str) {
        debug_assert!(!frame.contains(SEPARATOR));
        if !self.0.is_empty() {
            self.0.push(SEPARATOR);
        }
        self.0.push_str(frame);
    }
}

impl Deref for Frames {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// Sends `frames` (one frame, or [`Frames`]) to every socket of `state`
/// tagged `tag`, then `ack`'s frames to its socket: a publisher hears of
/// its message before its ack. Returns how many sends the sockets took (a
/// closing socket refuses them; its client resumes from history).
pub fn broadcast(state: &State, tag: &str, frames: &str, ack: Option<(&WebSocket, &str)>) -> u64 {
    if frames.is_empty() {
        return 0;
    }
    let (ack_ws, ack_frames) = match ack {
        Some((ws, frames)) => (ws.as_ref().as_ref(), frames),
        None => (&JsValue::UNDEFINED, ""),
    };
    u64::from(js_broadcast(
        state.as_raw(),
        tag,
        frames,
        ack_ws,
        ack_frames,
    ))
}

/// Sends `frames` to each of `sockets` (a hub's subscribers of one room);
/// returns how many sends the sockets took, as [`broadcast`] does.
pub fn broadcast_to<'a>(sockets: impl IntoIterator<Item = &'a WebSocket>, frames: &str) -> u64 {
    if frames.is_empty() {
        return 0;
    }
    let list: js_sys::Array = sockets
        .into_iter()
        .map(|ws| -> &JsValue { ws.as_ref().as_ref() })
        .collect();
    u64::from(js_broadcast_to(&list, frames))
}

/// Sends `frames` to `ws`, in order; fails when the socket refuses one.
pub fn send_each(ws: &WebSocket, frames: &str) -> Result<()> {
    if frames.is_empty() {
        return Ok(());
    }
    js_send_each(ws.as_ref().as_ref(), frames).map_err(worker::Error::from)
}
