//! Room → Kafka: one task per room this instance owns, holding the room link
//! (SPEC section 5) and producing every message to the events topic with the
//! key, value and headers of SPEC section 6.
//!
//! Deliveries are awaited in seq order and `bridge_ack` only ever names a seq
//! whose message, and every one before it, Kafka has acknowledged. Anything
//! unacknowledged when the link or the producer fails is replayed by the
//! room on the next link: duplicates are possible, gaps are not.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use roomcast_protocol::clock::now_ms;
use roomcast_protocol::stats::StatsReport;
use roomcast_protocol::wire::Message;
use roomcast_protocol::CloseCode;
use serde_json::Value;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as Frame;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::metrics::TO_KAFKA;
use crate::relay::Bridge;

/// How often confirmed progress is acknowledged to the room.
const ACK_INTERVAL: Duration = Duration::from_millis(50);
/// How often the link is pinged, so idle links survive proxies.
const PING_INTERVAL: Duration = Duration::from_secs(20);
/// How long a shutdown waits for outstanding deliveries.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a link ended.
enum End {
    /// Another instance took the room over (4009): do not reconnect.
    Superseded,
    /// The bridge is shutting down.
    Stopped,
    /// Anything else: reconnect with backoff.
    Lost(String),
}

/// Relays `room` until superseded or stopped.
pub async fn run(bridge: Arc<Bridge>, room: String, mut stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::network();
    let mut connected_before = false;
    loop {
        let end = link(
            &bridge,
            &room,
            &mut stop,
            &mut backoff,
            &mut connected_before,
        )
        .await;
        bridge
            .metrics
            .link_up
            .with_label_values(&[room.as_str()])
            .set(0);
        match end {
            End::Superseded => {
                info!(room, "room link superseded by another bridge instance");
                return;
            }
            End::Stopped => return,
            End::Lost(why) => {
                warn!(room, "room link lost: {why}");
                let delay = backoff.next_delay();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

/// A produced message whose delivery report is outstanding.
struct InFlight {
    seq: u64,
    ts: u64,
    id: String,
    delivery: DeliveryFuture,
}

async fn link(
    bridge: &Bridge,
    room: &str,
    stop: &mut watch::Receiver<bool>,
    backoff: &mut Backoff,
    connected_before: &mut bool,
) -> End {
    let url = bridge.urls.room_link(room, &bridge.instance);
    let mut ws = match bridge.connect(&url).await {
        Ok(ws) => ws,
        Err(e) => return End::Lost(format!("connect: {e}")),
    };
    backoff.reset();
    // Touching the series exports it at 0 before the first reconnect.
    let reconnects = bridge.metrics.link_reconnects.with_label_values(&[room]);
    if std::mem::replace(connected_before, true) {
        reconnects.inc();
    }
    bridge.metrics.link_up.with_label_values(&[room]).set(1);
    let mut inflight: VecDeque<InFlight> = VecDeque::new();
    let mut confirmed: Option<u64> = None;
    let mut acked: Option<u64> = None;
    let mut ack_tick = tokio::time::interval(ACK_INTERVAL);
    let mut ping_tick = tokio::time::interval(PING_INTERVAL);
    loop {
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Frame::Text(text))) => {
                    if let Err(why) = on_frame(bridge, room, &text, &mut inflight).await {
                        return End::Lost(why);
                    }
                }
                Some(Ok(Frame::Close(close))) => {
                    let code = close.as_ref().map(|c| u16::from(c.code));
                    return if code == Some(CloseCode::Superseded.code()) { End::Superseded } else { End::Lost(format!("closed by the room: {close:?}")) };
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return End::Lost(format!("link error: {e}")),
                None => return End::Lost("link ended".into()),
            },
            delivered = async { (&mut inflight.front_mut().expect("guarded by the condition").delivery).await }, if !inflight.is_empty() => {
                let done = inflight.pop_front().expect("front exists");
                match delivered {
                    Ok(Ok(_)) => {
                        confirmed = Some(done.seq);
                        bridge.metrics.relayed.with_label_values(&[TO_KAFKA]).inc();
                        let age = now_ms().saturating_sub(done.ts) as f64 / 1000.0;
                        bridge.metrics.relay_seconds.with_label_values(&[TO_KAFKA]).observe(age);
                        debug!(room, id = done.id, seq = done.seq, "delivered to Kafka");
                    }
                    Ok(Err((e, _))) => return End::Lost(format!("Kafka refused message {} (seq {}): {e}", done.id, done.seq)),
                    Err(_) => return End::Lost("the producer went away".into()),
                }
            },
            _ = ack_tick.tick() => {
                if confirmed > acked {
                    let seq = confirmed.expect("greater than something");
                    let ack = serde_json::json!({"type": "bridge_ack", "seq": seq}).to_string();
                    if let Err(e) = ws.send(Frame::text(ack)).await {
                        return End::Lost(format!("sending bridge_ack: {e}"));
                    }
                    acked = confirmed;
                }
            },
            _ = ping_tick.tick() => {
                if let Err(e) = ws.send(Frame::text("ping")).await {
                    return End::Lost(format!("ping: {e}"));
                }
            },
            _ = stop.changed() => {
                drain(bridge, room, &mut ws, inflight, confirmed.filter(|c| Some(*c) > acked)).await;
                return End::Stopped;
            },
        }
    }
}

/// On shutdown: waits (bounded) for outstanding deliveries, acknowledges
/// what Kafka confirmed, and closes the link with 1001.
async fn drain(
    bridge: &Bridge,
    room: &str,
    ws: &mut crate::relay::Link,
    inflight: VecDeque<InFlight>,
    mut confirmed: Option<u64>,
) {
    let wait = async {
        for flight in inflight {
            match flight.delivery.await {
                Ok(Ok(_)) => {
                    confirmed = Some(flight.seq);
                    bridge.metrics.relayed.with_label_values(&[TO_KAFKA]).inc();
                }
                _ => break,
            }
        }
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, wait).await.is_err() {
        warn!(
            room,
            "shutdown: deliveries still outstanding; the room will replay them"
        );
    }
    if let Some(seq) = confirmed {
        let _ = ws
            .send(Frame::text(
                serde_json::json!({"type": "bridge_ack", "seq": seq}).to_string(),
            ))
            .await;
    }
    let close = CloseFrame {
        code: WsCloseCode::Away,
        reason: "bridge shutting down".into(),
    };
    let _ = ws.close(Some(close)).await;
}

async fn on_frame(
    bridge: &Bridge,
    room: &str,
    text: &str,
    inflight: &mut VecDeque<InFlight>,
) -> Result<(), String> {
    if text == "pong" {
        return Ok(());
    }
    let frame: Value =
        serde_json::from_str(text).map_err(|e| format!("room sent non-JSON: {e}"))?;
    match frame["type"].as_str() {
        Some("message") => {
            let message: Message =
                serde_json::from_value(frame).map_err(|e| format!("bad message frame: {e}"))?;
            inflight.push_back(produce(bridge, message).await?);
        }
        Some("stats") => match serde_json::from_value::<StatsReport>(frame) {
            Ok(report) => bridge.metrics.room_stats(report),
            Err(e) => warn!(room, "unreadable stats frame: {e}"),
        },
        Some("welcome") => info!(
            room,
            cursor = frame["cursor"].as_u64(),
            head = frame["head"].as_u64(),
            "room link up"
        ),
        Some("error") => warn!(room, "room reported: {frame}"),
        other => debug!(room, "ignoring frame type {other:?}"),
    }
    Ok(())
}

/// Hands `message` to the producer, waiting while its queue is full.
async fn produce(bridge: &Bridge, message: Message) -> Result<InFlight, String> {
    let value = serde_json::to_string(&message).map_err(|e| e.to_string())?;
    let seq = message.seq.to_string();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "message-id",
            value: Some(message.id.as_str()),
        })
        .insert(Header {
            key: "room",
            value: Some(message.room.as_str()),
        })
        .insert(Header {
            key: "seq",
            value: Some(seq.as_str()),
        })
        .insert(Header {
            key: "origin",
            value: Some(message.origin.as_str()),
        });
    let mut backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(500));
    loop {
        let record = FutureRecord::to(&bridge.events_topic)
            .key(message.room.as_str())
            .payload(value.as_str())
            .headers(headers.clone());
        match bridge.producer.send_result(record) {
            Ok(delivery) => {
                return Ok(InFlight {
                    seq: message.seq,
                    ts: message.ts,
                    id: message.id.clone(),
                    delivery,
                });
            }
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                _,
            )) => {
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err((e, _)) => return Err(format!("producing message {}: {e}", message.id)),
        }
    }
}
