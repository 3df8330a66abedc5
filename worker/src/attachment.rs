//! Per-socket state kept in WebSocket attachments.
//!
//! A hibernating Durable Object loses its memory but not its WebSockets, so
//! whatever a socket needs across events rides on the socket itself. It is
//! stored as a JSON string, which keeps it well under the runtime's 16 KiB
//! attachment limit and free of JavaScript number surprises.

use serde::de::DeserializeOwned;
use serde::Serialize;
use worker::{Result, WebSocket};

/// State that lives in a socket's attachment.
pub trait Attachment: Serialize + DeserializeOwned {
    /// The socket's state, or `None` before any was saved.
    fn load(ws: &WebSocket) -> Result<Option<Self>> {
        match ws.deserialize_attachment::<String>()? {
            Some(json) => Ok(Some(serde_json::from_str(&json)?)),
            None => Ok(None),
        }
    }

    fn save(&self, ws: &WebSocket) -> Result<()> {
        ws.serialize_attachment(serde_json::to_string(self)?)
    }
}

impl Attachment for roomcast_protocol::session::Session {}
