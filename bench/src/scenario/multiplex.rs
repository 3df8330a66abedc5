//! Part 8, several rooms on one connection: one client in 100 rooms, on
//! one multiplexed connection (`GET /v1/ws`, every room in one `subscribe`
//! frame, held by a hub object that each room feeds) against 100
//! WebSockets, one per room (`/v1/rooms/{room}/ws`, held by the rooms
//! themselves); roomcast alone, the layouts' runs alternating.
//!
//! Each layout has a server of its own, so that one layout's objects
//! (the hubs, rooms left from its earlier runs) neither grow the other's
//! resident memory nor spend CPU in its windows. Every run takes fresh
//! rooms and the same publishers in both layouts: one publisher WebSocket
//! per room, connected before the subscriber, sending a fixed number of
//! messages at a fixed rate, each room's phase shifted so the 100 together
//! offer a steady load (part 2's paced publisher). WebSockets rather than
//! HTTP because a publish over HTTP costs the runtime a request through the
//! router into the room, several times a WebSocket publish, in both
//! layouts alike: it would bury the difference this part measures, the
//! delivery path. The publishers' own costs (the store, the ack, the echo
//! to the publisher) are in both layouts' figures alike.
//!
//! Per run, on the runtime workerd (`/proc`, as parts 6 and 7):
//! - its resident memory before the subscriber connects (the rooms up with
//!   their publishers) and once every room has confirmed the subscription
//!   (`subscribed` or `welcome`), and the difference per subscription;
//! - its CPU from the first publish until every message arrived (or
//!   [`DRAIN`] passed), per message delivered to the subscriber;
//! - client side: how long subscribing took, delivered messages per second
//!   (from the first publish to the last delivery) and latency from each
//!   message's scheduled send.
//!
//! Every delivery is entered in a [`Ledger`] by room and message index: a
//! run whose subscriber missed a message, got one twice or got one that
//! no publisher of the run sent is reported as such ([`Check`]), not
//! averaged away. Clients connect to the runtime directly, past wrangler's
//! proxy, as in parts 6 and 7, and the runtime's `Network` inspector domain
//! is off, as in part 6: a multiplexed layout's message is a request from
//! its room to the hub, which the domain would make dearer under `wrangler
//! dev` than anywhere else.
//!
//! Resident memory moves in the allocator's steps, not per socket, so one
//! run's difference is coarse; the part reports the median over runs and
//! their range.

use std::collections::HashMap;
use std::fmt::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::future::try_join_all;
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use roomcast_tests::WorkerSpec;
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use tokio::time::{timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::Message;

use crate::client::clock;
use crate::client::fleet::CONNECTS;
use crate::client::load;
use crate::client::net::Traffic;
use crate::client::publisher::Publisher;
use crate::client::receiver::Receivers;
use crate::client::recorder::Stamp;
use crate::client::ws::{self, Incoming, Socket};
use crate::measure::stats::{percentile_ms, Spread};
use crate::profiler::inspector::Inspector;
use crate::server::{Flavor, Server};
use crate::table::{cell, number, ratio, Table};

/// How long the last messages of a run may take to arrive after the last
/// publish; what has not arrived by then is a shortfall.
const DRAIN: Duration = Duration::from_secs(10);
/// How long subscribing to every room may take.
const SUBSCRIBE: Duration = Duration::from_secs(60);

pub struct Plan {
    pub rooms: usize,
    /// Messages each room's publisher sends per run.
    pub messages: u64,
    /// Messages/s of each room's publisher.
    pub rate: f64,
    pub runs: usize,
    pub state_root: PathBuf,
    /// roomcast's wrangler configuration.
    pub config: PathBuf,
}

impl Plan {
    /// How long each run publishes.
    fn publishing(&self) -> Duration {
        Duration::from_secs_f64(self.messages as f64 / self.rate)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One connection to `/v1/ws`, subscribed to every room.
    Multiplexed,
    /// One connection per room to its own route.
    PerRoom,
}

impl Layout {
    const BOTH: [Layout; 2] = [Layout::Multiplexed, Layout::PerRoom];

    pub fn label(self) -> &'static str {
        match self {
            Layout::Multiplexed => "multiplexed",
            Layout::PerRoom => "socket per room",
        }
    }

    /// The subscriber's sockets for `rooms` rooms.
    fn sockets(self, rooms: usize) -> usize {
        match self {
            Layout::Multiplexed => 1,
            Layout::PerRoom => rooms,
        }
    }
}

/// What one run's subscriber received, against what the publishers sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Check {
    /// Messages the publishers sent.
    pub expected: u64,
    /// Messages delivered at least once.
    pub delivered: u64,
    /// Deliveries beyond a message's first.
    pub duplicates: u64,
    /// Rooms with a message missing.
    pub rooms_short: usize,
    /// Deliveries of the run that no publisher sent to a subscribed room.
    pub strays: u64,
}

impl Check {
    /// From each room's deliveries per message index.
    fn of(counts: &[Vec<u32>], strays: u64) -> Check {
        let mut check = Check {
            strays,
            ..Check::default()
        };
        for room in counts {
            let delivered = room.iter().filter(|&&n| n > 0).count();
            check.expected += room.len() as u64;
            check.delivered += delivered as u64;
            check.duplicates += room
                .iter()
                .map(|&n| u64::from(n.saturating_sub(1)))
                .sum::<u64>();
            if delivered < room.len() {
                check.rooms_short += 1;
            }
        }
        check
    }

    pub fn missing(&self) -> u64 {
        self.expected - self.delivered
    }

    /// Every message delivered exactly once, and nothing else.
    pub fn exact(&self) -> bool {
        self.missing() == 0 && self.duplicates == 0 && self.strays == 0
    }

    fn describe(&self) -> String {
        format!(
            "{} of {} messages delivered ({} missing in {} rooms), {} duplicated, {} stray",
            self.delivered,
            self.expected,
            self.missing(),
            self.rooms_short,
            self.duplicates,
            self.strays
        )
    }
}

/// Deliveries of one run, by room and message index.
struct Ledger {
    run: u32,
    rooms: HashMap<String, usize>,
    entries: Mutex<Entries>,
    progress: Notify,
}

#[derive(Default)]
struct Entries {
    /// `counts[room][i]`: deliveries of the room's message `i`.
    counts: Vec<Vec<u32>>,
    /// Messages delivered at least once.
    distinct: u64,
    strays: u64,
    /// Latency of each first delivery, µs.
    latencies_us: Vec<u32>,
    /// When the latest first delivery arrived, µs on the clock.
    last_us: u64,
}

impl Ledger {
    fn new(run: u32, rooms: &[String], messages: u64) -> Ledger {
        Ledger {
            run,
            rooms: rooms
                .iter()
                .enumerate()
                .map(|(k, room)| (room.clone(), k))
                .collect(),
            entries: Mutex::new(Entries {
                counts: vec![vec![0; messages as usize]; rooms.len()],
                ..Entries::default()
            }),
            progress: Notify::new(),
        }
    }

    /// A delivery of `stamp` in `room`, received at `received_us`; stamps
    /// of another run are not this run's business.
    fn record(&self, room: Option<&str>, stamp: Stamp, received_us: u64) {
        if stamp.r != self.run {
            return;
        }
        let mut entries = self.lock();
        let index = room.and_then(|room| self.rooms.get(room));
        let count = index.and_then(|&k| entries.counts[k].get_mut(stamp.i as usize));
        match count {
            None => entries.strays += 1,
            Some(count) => {
                *count += 1;
                if *count == 1 {
                    entries.distinct += 1;
                    let latency = received_us.saturating_sub(stamp.t);
                    entries
                        .latencies_us
                        .push(latency.min(u64::from(u32::MAX)) as u32);
                    entries.last_us = entries.last_us.max(received_us);
                    self.progress.notify_waiters();
                }
            }
        }
    }

    /// Waits until every message arrived at least once, or `deadline`.
    async fn wait_all(&self, deadline: Instant) {
        loop {
            let notified = self.progress.notified();
            tokio::pin!(notified);
            // Registered before the check, so no notification is missed.
            notified.as_mut().enable();
            let (distinct, expected) = {
                let entries = self.lock();
                let expected: usize = entries.counts.iter().map(Vec::len).sum();
                (entries.distinct, expected as u64)
            };
            if distinct >= expected || timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One run's figures.
struct Run {
    subscribe_s: f64,
    rss_before_kib: u64,
    rss_after_kib: u64,
    /// Runtime CPU seconds from the first publish until the last delivery.
    cpu_s: f64,
    /// Messages delivered per second, first publish to last delivery.
    delivered_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    check: Check,
    /// Publishes the rooms refused.
    rejected: u64,
}

impl Run {
    fn kib_per_subscription(&self, rooms: usize) -> f64 {
        (self.rss_after_kib as f64 - self.rss_before_kib as f64) / rooms as f64
    }

    fn cpu_ms_per_message(&self) -> f64 {
        self.cpu_s * 1000.0 / self.check.delivered as f64
    }
}

/// One layout over its runs.
pub struct Outcome {
    pub layout: Layout,
    pub sockets: usize,
    pub subscribe_s: Spread,
    pub rss_before_mib: Spread,
    pub rss_after_mib: Spread,
    pub kib_per_subscription: Spread,
    pub cpu_ms_per_message: Spread,
    pub delivered_per_s: Spread,
    pub p50_ms: Spread,
    pub p99_ms: Spread,
    /// Each run's delivery check, in order.
    pub checks: Vec<Check>,
    pub rejected: u64,
}

pub struct MultiplexResults {
    pub rooms: usize,
    pub messages: u64,
    pub rate: f64,
    pub runs: usize,
    pub outcomes: Vec<Outcome>,
}

pub async fn run(plan: &Plan) -> Result<MultiplexResults> {
    let mut servers = Vec::new();
    for layout in Layout::BOTH {
        servers.push((layout, start(plan, layout).await?));
    }
    let mut runs: Vec<Vec<Run>> = servers.iter().map(|_| Vec::new()).collect();
    for n in 1..=plan.runs {
        for ((layout, server), done) in servers.iter().zip(&mut runs) {
            let what = format!(
                "{}, {} rooms × {} messages, run {n}",
                layout.label(),
                plan.rooms,
                plan.messages
            );
            let run = measure(server, *layout, plan)
                .await
                .with_context(|| format!("multiplexed connections: {what}"))?;
            progress(&what, &run, plan.rooms);
            done.push(run);
        }
    }
    Ok(MultiplexResults {
        rooms: plan.rooms,
        messages: plan.messages,
        rate: plan.rate,
        runs: plan.runs,
        outcomes: servers
            .iter()
            .zip(runs)
            .map(|((layout, _), runs)| outcome(*layout, plan.rooms, &runs))
            .collect(),
    })
}

async fn start(plan: &Plan, layout: Layout) -> Result<Server> {
    let rooms = plan.rooms.to_string();
    let vars = [("MAX_ROOMS_PER_CONNECTION", rooms.as_str())];
    let spec = WorkerSpec::default();
    let mut server = Server::start_with(Flavor::Ours, &plan.config, spec, &plan.state_root, &vars)
        .await
        .with_context(|| format!("starting roomcast, {}", layout.label()))?;
    server.bypass_proxy().await?;
    Inspector::connect(server.worker().inspector_port())
        .await
        .context("the inspector port")?
        .disable_network()
        .await?;
    eprintln!(
        "[roomcast, {}] wrangler dev up, clients to its runtime on {}",
        layout.label(),
        server.addr()
    );
    Ok(server)
}

/// One run of `layout`: fresh rooms and their publishers, the subscriber,
/// the paced load, then everything closed.
async fn measure(server: &Server, layout: Layout, plan: &Plan) -> Result<Run> {
    static RUNS: AtomicU32 = AtomicU32::new(1);
    let run = RUNS.fetch_add(1, Ordering::SeqCst);
    let rooms: Vec<String> = (0..plan.rooms).map(|_| server.fresh_room("mux")).collect();
    let mut publishers = try_join_all(rooms.iter().map(|room| Publisher::connect(server, room)))
        .await
        .context("connecting publishers")?;
    let duration = plan.publishing();
    let ledger = Arc::new(Ledger::new(
        run,
        &rooms,
        load::messages(plan.rate, duration),
    ));
    let rss_before_kib = server.runtime_resident_kib()?;
    let subscribing = Instant::now();
    let receivers = match layout {
        Layout::Multiplexed => subscribe_multiplexed(server, &rooms, &ledger).await,
        Layout::PerRoom => subscribe_per_room(server, &rooms, &ledger).await,
    }
    .context("subscribing")?;
    let subscribe_s = subscribing.elapsed().as_secs_f64();
    let rss_after_kib = server.runtime_resident_kib()?;

    let before = server.cpu()?;
    let start_us = clock::now_us();
    let count = rooms.len() as f64;
    try_join_all(publishers.iter_mut().enumerate().map(|(k, publisher)| {
        let phase = Duration::from_secs_f64(k as f64 / count / plan.rate);
        load::paced(publisher, run, plan.rate, duration, phase)
    }))
    .await
    .context("publishing")?;
    ledger.wait_all(Instant::now() + DRAIN).await;
    let cpu_s = (server.cpu()? - before).runtime;

    let rejected = publishers.iter().map(Publisher::take_rejected).sum();
    receivers.stop().await.context("the subscriber")?;
    for publisher in publishers {
        publisher.close().await;
    }
    let mut entries = std::mem::take(&mut *ledger.lock());
    entries.latencies_us.sort_unstable();
    let span_s = entries.last_us.saturating_sub(start_us) as f64 / 1e6;
    Ok(Run {
        subscribe_s,
        rss_before_kib,
        rss_after_kib,
        cpu_s,
        delivered_per_s: entries.distinct as f64 / span_s,
        p50_ms: percentile_ms(&entries.latencies_us, 0.50),
        p99_ms: percentile_ms(&entries.latencies_us, 0.99),
        check: Check::of(&entries.counts, entries.strays),
        rejected,
    })
}

/// One connection to `/v1/ws` that subscribes to every room in one frame;
/// returned once every room answered `subscribed`.
async fn subscribe_multiplexed(
    server: &Server,
    rooms: &[String],
    ledger: &Arc<Ledger>,
) -> Result<Receivers> {
    let path = format!("/v1/ws?token={}", server.token());
    let mut socket = ws::connect_until(server.addr(), &path, Traffic::new(), "connected").await?;
    let subscribe = json!({
        "type": "subscribe",
        "rooms": rooms.iter().map(|room| json!({ "room": room })).collect::<Vec<_>>(),
    });
    socket
        .send(Message::text(subscribe.to_string()))
        .await
        .context("sending the subscribe frame")?;
    timeout(SUBSCRIBE, await_subscribed(&mut socket, rooms.len()))
        .await
        .with_context(|| format!("not every room subscribed within {SUBSCRIBE:?}"))??;
    let mut receivers = Receivers::default();
    let ledger = ledger.clone();
    receivers.spawn(|stop| follow(socket, ledger, stop));
    Ok(receivers)
}

/// Reads until `rooms` distinct rooms answered `subscribed`; an `error`
/// frame fails the run.
async fn await_subscribed(socket: &mut Socket, rooms: usize) -> Result<()> {
    let mut subscribed = std::collections::HashSet::new();
    while subscribed.len() < rooms {
        let Some(frame) = socket.next().await else {
            bail!("the connection ended while subscribing");
        };
        let Message::Text(text) = frame.context("reading subscriptions")? else {
            continue;
        };
        let frame: Value = serde_json::from_str(&text)
            .with_context(|| format!("a frame that is not JSON: {text}"))?;
        match frame["type"].as_str() {
            Some("subscribed") => {
                subscribed.insert(frame["room"].as_str().unwrap_or_default().to_owned());
            }
            Some("error") => bail!("refused: {text}"),
            _ => {}
        }
    }
    Ok(())
}

/// One connection per room, each returned once its room's `welcome` came.
async fn subscribe_per_room(
    server: &Server,
    rooms: &[String],
    ledger: &Arc<Ledger>,
) -> Result<Receivers> {
    let traffic = Traffic::new();
    let sockets: Vec<Socket> = futures_util::stream::iter(rooms)
        .map(|room| {
            let (path, traffic) = (server.ws_path(room), traffic.clone());
            async move { ws::connect(server.addr(), &path, traffic).await }
        })
        .buffer_unordered(CONNECTS)
        .try_collect()
        .await?;
    let mut receivers = Receivers::default();
    for socket in sockets {
        let ledger = ledger.clone();
        receivers.spawn(|stop| follow(socket, ledger, stop));
    }
    Ok(receivers)
}

/// Enters every message `socket` receives into `ledger` until told to
/// stop, then closes. An `error` frame or a close from the server fails
/// the run: the subscriber would have lost its room.
async fn follow(
    mut socket: Socket,
    ledger: Arc<Ledger>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    loop {
        tokio::select! {
            frame = socket.next() => {
                let received = clock::now_us();
                match frame {
                    Some(Ok(Message::Text(text))) => match ws::parse_in_room(&text)? {
                        (Incoming::Message(stamp), room) => {
                            ledger.record(room.as_deref(), stamp, received);
                        }
                        (Incoming::Error(code), _) => bail!("an error frame ({code}): {text}"),
                        (Incoming::Other, _) => {}
                    },
                    Some(Ok(Message::Close(close))) => bail!("the server closed the subscriber: {close:?}"),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e).context("the subscriber's connection"),
                    None => bail!("the subscriber's connection ended"),
                }
            }
            _ = stop.changed() => break,
        }
    }
    ws::close(socket).await;
    Ok(())
}

fn outcome(layout: Layout, rooms: usize, runs: &[Run]) -> Outcome {
    let spread = |f: &dyn Fn(&Run) -> f64| Spread::of(runs.iter().map(f));
    let mib = |kib: u64| kib as f64 / 1024.0;
    Outcome {
        layout,
        sockets: layout.sockets(rooms),
        subscribe_s: spread(&|r| r.subscribe_s),
        rss_before_mib: spread(&|r| mib(r.rss_before_kib)),
        rss_after_mib: spread(&|r| mib(r.rss_after_kib)),
        kib_per_subscription: spread(&|r| r.kib_per_subscription(rooms)),
        cpu_ms_per_message: spread(&|r| r.cpu_ms_per_message()),
        delivered_per_s: spread(&|r| r.delivered_per_s),
        p50_ms: spread(&|r| r.p50_ms),
        p99_ms: spread(&|r| r.p99_ms),
        checks: runs.iter().map(|r| r.check).collect(),
        rejected: runs.iter().map(|r| r.rejected).sum(),
    }
}

fn progress(what: &str, run: &Run, rooms: usize) {
    let rejected = if run.rejected > 0 {
        format!(", {} publishes REJECTED", run.rejected)
    } else {
        String::new()
    };
    eprintln!(
        "[roomcast] {what}: subscribed in {} s, runtime RSS {} → {} KiB ({} KiB / subscription), \
         runtime CPU {} ms / message, {} delivered/s, p50 {} ms, p99 {} ms; {}{rejected}",
        number(run.subscribe_s),
        run.rss_before_kib,
        run.rss_after_kib,
        number(run.kib_per_subscription(rooms)),
        number(run.cpu_ms_per_message()),
        number(run.delivered_per_s),
        number(run.p50_ms),
        number(run.p99_ms),
        run.check.describe(),
    );
}

/// The part's table, multiplexed over socket per room, and every run
/// whose deliveries were not exact.
pub fn render(out: &mut String, results: &MultiplexResults) {
    let total = results.rooms as f64 * results.rate;
    let _ = writeln!(
        out,
        "One client in {rooms} rooms: one multiplexed connection (`/v1/ws`, one `subscribe` \
         frame) against {rooms} WebSockets (`/v1/rooms/{{room}}/ws`), each layout on a server of \
         its own, runs alternating; {} runs per layout, fresh rooms in each. Publishers: one \
         WebSocket per room, {} messages each at {} msg/s ({} msg/s in all). *runtime*: the \
         workerd that runs every object (/proc): its resident memory before the subscriber \
         connects and once every room confirmed it, and its CPU from the first publish to the \
         last delivery, per message delivered (the publish, its ack and its echo to the \
         publisher included, alike in both layouts). *delivered/s* and latency: client side, \
         first publish to last delivery; latency from each message's scheduled send.\n",
        results.runs,
        results.messages,
        number(results.rate),
        number(total),
        rooms = results.rooms,
    );
    let mut table = Table::new(&[
        "layout",
        "sockets",
        "subscribed in, s",
        "runtime RSS before, MiB",
        "runtime RSS after, MiB",
        "runtime KiB / subscription",
        "runtime CPU ms / message",
        "delivered/s",
        "p50 ms",
        "p99 ms",
        "runs delivering every message once",
    ]);
    for o in &results.outcomes {
        let exact = o.checks.iter().filter(|c| c.exact()).count();
        table.row(vec![
            o.layout.label().into(),
            o.sockets.to_string(),
            cell(&o.subscribe_s),
            cell(&o.rss_before_mib),
            cell(&o.rss_after_mib),
            cell(&o.kib_per_subscription),
            cell(&o.cpu_ms_per_message),
            cell(&o.delivered_per_s),
            cell(&o.p50_ms),
            cell(&o.p99_ms),
            format!("{exact} of {}", o.checks.len()),
        ]);
    }
    table.render_into(out);
    ratios(out, results);
    for o in &results.outcomes {
        for (n, check) in o.checks.iter().enumerate() {
            if !check.exact() {
                let _ = writeln!(
                    out,
                    "{}, run {}: {}.\n",
                    o.layout.label(),
                    n + 1,
                    check.describe()
                );
            }
        }
        if o.rejected > 0 {
            let _ = writeln!(
                out,
                "{}: {} publishes rejected over all runs.\n",
                o.layout.label(),
                o.rejected
            );
        }
    }
}

/// Multiplexed over socket per room, ratio of medians.
fn ratios(out: &mut String, results: &MultiplexResults) {
    let find = |layout| results.outcomes.iter().find(|o| o.layout == layout);
    let (Some(mux), Some(per)) = (find(Layout::Multiplexed), find(Layout::PerRoom)) else {
        return;
    };
    let _ = writeln!(
        out,
        "**multiplexed / socket per room (ratio of medians)**\n"
    );
    let mut table = Table::new(&[
        "subscribed in",
        "runtime KiB / subscription",
        "runtime CPU / message",
        "delivered/s",
        "p50",
        "p99",
    ]);
    let pair = |f: fn(&Outcome) -> &Spread| ratio(f(mux), f(per));
    table.row(vec![
        pair(|o| &o.subscribe_s),
        pair(|o| &o.kib_per_subscription),
        pair(|o| &o.cpu_ms_per_message),
        pair(|o| &o.delivered_per_s),
        pair(|o| &o.p50_ms),
        pair(|o| &o.p99_ms),
    ]);
    table.render_into(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|k| format!("r{k}")).collect()
    }

    fn stamp(r: u32, i: u64) -> Stamp {
        Stamp { r, i, t: 0 }
    }

    #[test]
    fn a_missing_message_and_a_duplicate_do_not_cancel_out() {
        // Room 0: message 1 twice, message 2 never; room 1: exact.
        let check = Check::of(&[vec![1, 2, 0], vec![1, 1, 1]], 0);
        assert_eq!(
            check,
            Check {
                expected: 6,
                delivered: 5,
                duplicates: 1,
                rooms_short: 1,
                strays: 0,
            }
        );
        assert_eq!(check.missing(), 1);
        assert!(!check.exact());
        assert!(Check::of(&[vec![1, 1], vec![1, 1]], 0).exact());
        assert!(!Check::of(&[vec![1, 1]], 1).exact());
    }

    #[test]
    fn the_ledger_counts_by_room_and_index_and_ignores_other_runs() {
        let rooms = names(2);
        let ledger = Ledger::new(7, &rooms, 2);
        ledger.record(Some("r0"), stamp(7, 0), 10);
        ledger.record(Some("r0"), stamp(7, 0), 11);
        ledger.record(Some("r1"), stamp(7, 1), 12);
        // Another run's late frame, a room not subscribed, an index past
        // what was sent, a message without a room.
        ledger.record(Some("r1"), stamp(6, 0), 13);
        ledger.record(Some("elsewhere"), stamp(7, 0), 14);
        ledger.record(Some("r1"), stamp(7, 2), 15);
        ledger.record(None, stamp(7, 0), 16);
        let entries = ledger.lock();
        assert_eq!(entries.counts, vec![vec![2, 0], vec![0, 1]]);
        assert_eq!(entries.distinct, 2);
        assert_eq!(entries.strays, 3);
        assert_eq!(entries.latencies_us, vec![10, 12]);
        assert_eq!(entries.last_us, 12);
        let check = Check::of(&entries.counts, entries.strays);
        assert_eq!((check.missing(), check.rooms_short), (2, 2));
    }

    #[tokio::test]
    async fn waiting_ends_when_every_message_arrived_once() {
        let rooms = names(2);
        let ledger = Arc::new(Ledger::new(1, &rooms, 1));
        let far = Instant::now() + Duration::from_secs(30);
        let waiting = tokio::spawn({
            let ledger = ledger.clone();
            async move { ledger.wait_all(far).await }
        });
        ledger.record(Some("r0"), stamp(1, 0), 1);
        ledger.record(Some("r0"), stamp(1, 0), 2);
        ledger.record(Some("r1"), stamp(1, 0), 3);
        timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the wait ends with the last message")
            .expect("the waiter does not panic");
    }

    fn outcome(layout: Layout, cpu_ms: f64, checks: Vec<Check>) -> Outcome {
        let at = |x: f64| Spread::of([x]);
        Outcome {
            layout,
            sockets: layout.sockets(2),
            subscribe_s: at(1.0),
            rss_before_mib: at(100.0),
            rss_after_mib: at(101.0),
            kib_per_subscription: at(10.0),
            cpu_ms_per_message: at(cpu_ms),
            delivered_per_s: at(4.0),
            p50_ms: at(2.0),
            p99_ms: at(3.0),
            checks,
            rejected: 0,
        }
    }

    #[test]
    fn the_report_sets_the_layouts_side_by_side_and_names_every_shortfall() {
        let exact = Check::of(&[vec![1, 1], vec![1, 1]], 0);
        let short = Check::of(&[vec![1, 0], vec![1, 1]], 0);
        let results = MultiplexResults {
            rooms: 2,
            messages: 2,
            rate: 1.0,
            runs: 2,
            outcomes: vec![
                outcome(Layout::Multiplexed, 0.5, vec![exact, short]),
                outcome(Layout::PerRoom, 0.25, vec![exact, exact]),
            ],
        };
        let mut out = String::new();
        render(&mut out, &results);
        assert!(out.contains("| multiplexed | 1 |"), "{out}");
        assert!(out.contains("| socket per room | 2 |"), "{out}");
        assert!(out.contains("| 1 of 2 |"), "{out}");
        assert!(out.contains("| 2 of 2 |"), "{out}");
        // CPU per message: 0.5 ms against 0.25 ms.
        assert!(
            out.contains("| 1.00× | 1.00× | 2.00× | 1.00× | 1.00× | 1.00× |"),
            "{out}"
        );
        assert!(
            out.contains(
                "multiplexed, run 2: 3 of 4 messages delivered (1 missing in 1 rooms), \
                 0 duplicated, 0 stray."
            ),
            "{out}"
        );
    }

    #[tokio::test]
    async fn waiting_gives_up_at_the_deadline() {
        let ledger = Ledger::new(1, &names(1), 1);
        let soon = Instant::now() + Duration::from_millis(50);
        timeout(Duration::from_secs(5), ledger.wait_all(soon))
            .await
            .expect("the wait ends at its deadline");
        assert_eq!(Check::of(&ledger.lock().counts, 0).missing(), 1);
    }
}
