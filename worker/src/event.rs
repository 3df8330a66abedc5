//! The runtime's events on roomcast's Durable Objects, run without a future
//! per event when their work never waits.
//!
//! workers-rs's `#[durable_object]` exports every handler as an `async fn`,
//! so each event pays for a promise, a closure, a spawned task, a microtask
//! and a resolve, even when the work (a publish: one SQLite write and the
//! sends) never awaits anything. Here an object's class is declared with
//! [`durable_object_class!`] over a type with [`Handlers`]: each handler
//! polls its work once, in the runtime's own call ([`settle`]); work that
//! finishes returns at once, and only work that waits (a storage call that
//! is not synchronous, a fetch to another object) becomes a promise for the
//! runtime to await.

use std::future::Future;
use std::task::{Context, Poll, Waker};

use wasm_bindgen::JsValue;
use worker::wasm_bindgen_futures::future_to_promise;
use worker::{Env, Request, Response, Result, State, WebSocket, WebSocketIncomingMessage};

/// What the runtime asks of one of roomcast's Durable Objects.
pub trait Handlers {
    fn new(state: State, env: Env) -> Self;
    async fn fetch(&self, req: Request) -> Result<Response>;
    async fn alarm(&self) -> Result<Response>;
    /// A frame; failures are the object's to answer (they close the socket).
    async fn message(&self, ws: WebSocket, message: WebSocketIncomingMessage);
    async fn close(&self, ws: WebSocket, code: usize);
    async fn error(&self, ws: WebSocket, error: worker::Error);
}

/// The value of `work`, or, when it must wait, a promise of it. A failure
/// is thrown (or rejects the promise), as an `async` export's would be.
pub fn settle(work: impl Future<Output = Result<JsValue>> + 'static) -> JsValue {
    let mut work = Box::pin(async move { work.await.map_err(JsValue::from) });
    // A future that waits keeps the waker of its latest poll; the promise's
    // executor polls it again with its own, so this one is never needed.
    match work.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(value)) => value,
        Poll::Ready(Err(error)) => wasm_bindgen::throw_val(error),
        Poll::Pending => future_to_promise(work).into(),
    }
}

/// Declares `$class`, exported to JavaScript as the class `$name` that
/// `wrangler.toml` binds, over `$object`'s [`Handlers`]. The object is
/// shared with the work of an event that waits.
macro_rules! durable_object_class {
    ($class:ident, $name:ident, $object:ty) => {
        #[doc = concat!("The class the runtime instantiates as `", stringify!($name), "`.")]
        #[::wasm_bindgen::prelude::wasm_bindgen(js_name = $name)]
        pub struct $class(::std::rc::Rc<$object>);

        #[::wasm_bindgen::prelude::wasm_bindgen(js_class = $name)]
        impl $class {
            #[wasm_bindgen(constructor)]
            pub fn new(
                state: ::worker::worker_sys::DurableObjectState,
                env: ::worker::Env,
            ) -> $class {
                use $crate::event::Handlers;
                $class(::std::rc::Rc::new(<$object>::new(state.into(), env)))
            }

            pub fn fetch(
                &self,
                req: ::worker::worker_sys::web_sys::Request,
            ) -> ::wasm_bindgen::JsValue {
                use $crate::event::Handlers;
                let object = self.0.clone();
                $crate::event::settle(async move {
                    let response = object.fetch(req.into()).await?;
                    Ok(::worker::worker_sys::web_sys::Response::from(response).into())
                })
            }

            pub fn alarm(&self) -> ::wasm_bindgen::JsValue {
                use $crate::event::Handlers;
                let object = self.0.clone();
                $crate::event::settle(async move {
                    let response = object.alarm().await?;
                    Ok(::worker::worker_sys::web_sys::Response::from(response).into())
                })
            }

            #[wasm_bindgen(js_name = webSocketMessage)]
            pub fn websocket_message(
                &self,
                ws: ::worker::worker_sys::web_sys::WebSocket,
                message: ::wasm_bindgen::JsValue,
            ) -> ::wasm_bindgen::JsValue {
                use $crate::event::Handlers;
                let message = match message.as_string() {
                    Some(text) => ::worker::WebSocketIncomingMessage::String(text),
                    None => ::worker::WebSocketIncomingMessage::Binary(
                        ::worker::js_sys::Uint8Array::new(&message).to_vec(),
                    ),
                };
                let object = self.0.clone();
                $crate::event::settle(async move {
                    object.message(ws.into(), message).await;
                    Ok(::wasm_bindgen::JsValue::UNDEFINED)
                })
            }

            #[wasm_bindgen(js_name = webSocketClose)]
            pub fn websocket_close(
                &self,
                ws: ::worker::worker_sys::web_sys::WebSocket,
                code: usize,
                _reason: String,
                _was_clean: bool,
            ) -> ::wasm_bindgen::JsValue {
                use $crate::event::Handlers;
                let object = self.0.clone();
                $crate::event::settle(async move {
                    object.close(ws.into(), code).await;
                    Ok(::wasm_bindgen::JsValue::UNDEFINED)
                })
            }

            #[wasm_bindgen(js_name = webSocketError)]
            pub fn websocket_error(
                &self,
                ws: ::worker::worker_sys::web_sys::WebSocket,
                error: ::wasm_bindgen::JsValue,
            ) -> ::wasm_bindgen::JsValue {
                use $crate::event::Handlers;
                let object = self.0.clone();
                $crate::event::settle(async move {
                    object.error(ws.into(), error.into()).await;
                    Ok(::wasm_bindgen::JsValue::UNDEFINED)
                })
            }
        }
    };
}

pub(crate) use durable_object_class;
