//! Runtime calls that workers-rs 0.8.7 does not bind, or binds at a cost
//! paid on every frame.
//!
//! `ping` frames are answered by the runtime's auto-response without waking
//! the room, so the only record of them is this timestamp; the idle sweep
//! needs it to tell a quiet client from a dead one.

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use worker::{State, WebSocket};

#[wasm_bindgen(module = "/js/sockets.js")]
extern "C" {
    #[wasm_bindgen(js_name = hasTag)]
    fn js_has_tag(state: &JsValue, ws: &JsValue, tag: &str) -> bool;
}

#[wasm_bindgen]
extern "C" {
    type HibernationState;

    #[wasm_bindgen(method, js_name = getWebSocketAutoResponseTimestamp)]
    fn get_web_socket_auto_response_timestamp(
        this: &HibernationState,
        ws: &JsValue,
    ) -> Option<js_sys::Date>;
}

/// A second handle on an object's state, for a component that holds the
/// object's sockets itself (workers-rs hands the object one `State`, which
/// does not clone).
pub fn handle(state: &State) -> State {
    State::from(
        JsValue::clone(state.as_raw()).unchecked_into::<worker::worker_sys::DurableObjectState>(),
    )
}

/// When the runtime last auto-responded to a `ping` on `ws`, in ms since the epoch.
pub fn last_auto_response_ms(state: &State, ws: &WebSocket) -> Option<u64> {
    let raw: &HibernationState = state.as_raw().unchecked_ref();
    let socket: &JsValue = ws.as_ref().as_ref();
    raw.get_web_socket_auto_response_timestamp(socket)
        .map(|d| d.get_time() as u64)
}

/// Whether `state` accepted `ws` with `tag`: the tags are read once per
/// wake (`worker/js/sockets.js`), where `State::get_tags` builds them anew
/// on every call.
pub fn has_tag(state: &State, ws: &WebSocket, tag: &str) -> bool {
    js_has_tag(state.as_raw(), ws.as_ref().as_ref(), tag)
}
