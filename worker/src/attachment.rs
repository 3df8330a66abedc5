//! Per-socket state kept in WebSocket attachments.
//!
//! A hibernating Durable Object loses its memory but not its WebSockets, so
//! whatever a socket needs across events rides on the socket itself. It is
//! stored as a JSON string, which keeps it well under the runtime's 16 KiB
//! attachment limit and free of JavaScript number surprises, and read and
//! written through `worker/js/sockets.js`, which decodes each socket's once
//! per wake rather than on every frame.

use serde::de::DeserializeOwned;
use serde::Serialize;
use wasm_bindgen::prelude::*;
use worker::{Result, WebSocket};

#[wasm_bindgen(module = "/js/sockets.js")]
extern "C" {
    #[wasm_bindgen(js_name = load, catch)]
    fn js_load(ws: &JsValue) -> std::result::Result<Option<String>, JsValue>;

    #[wasm_bindgen(js_name = save, catch)]
    fn js_save(ws: &JsValue, json: &str) -> std::result::Result<(), JsValue>;

    #[wasm_bindgen(js_name = number)]
    fn js_number(ws: &JsValue) -> f64;
}

/// A number naming `ws` while this wake of the object holds it: the same
/// socket object has the same number, and no two sockets share one (a
/// socket handed over after hibernation is a new object, with a new
/// number). What is decoded from a socket's attachment is kept by it.
pub fn socket_number(ws: &WebSocket) -> u64 {
    js_number(ws.as_ref().as_ref()) as u64
}

/// State that lives in a socket's attachment.
pub trait Attachment: Serialize + DeserializeOwned {
    /// The socket's state, or `None` before any was saved.
    fn load(ws: &WebSocket) -> Result<Option<Self>> {
        match js_load(ws.as_ref().as_ref())? {
            Some(json) => Ok(Some(serde_json::from_str(&json)?)),
            None => Ok(None),
        }
    }

    fn save(&self, ws: &WebSocket) -> Result<()> {
        Ok(js_save(
            ws.as_ref().as_ref(),
            &serde_json::to_string(self)?,
        )?)
    }
}

impl Attachment for roomcast_protocol::session::Session {}
