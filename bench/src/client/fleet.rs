//! A fleet of load clients: K rooms, each with one publisher and N
//! subscribers, connected once and reused by every run of a shape (a
//! thousand handshakes are slow through the dev server); the run id in each
//! stamp keeps runs apart. The fan-out and many-rooms parts measure with it,
//! the sharded rooms part grows it from the smallest N to the largest, and
//! the profiler loads its room with it.
//!
//! A run is closed loop ([`Fleet::saturate`]: each publisher keeps a bounded
//! number of messages not yet delivered to all of its room, so the server
//! runs flat out without an unbounded backlog; the rate is read over a
//! window after a warm-up) or open loop ([`Fleet::paced`]: a fixed rate per
//! room).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::future::try_join_all;
use futures_util::{StreamExt, TryStreamExt};
use tokio::time::{sleep_until, Instant};

use crate::client::load;
use crate::client::net::Traffic;
use crate::client::publisher::Publisher;
use crate::client::receiver::Receivers;
use crate::client::recorder::Recorder;
use crate::client::ws;
use crate::measure::probe::Probe;
use crate::measure::stats::Sample;
use crate::server::Server;

/// Deliveries (message × subscriber) the whole fleet keeps in flight when
/// saturating: enough to keep every stage busy, few enough that the queue
/// stays in the server's memory rather than growing without bound.
const IN_FLIGHT: u64 = 1024;
/// Fewest messages a room keeps in flight, so a big room still pipelines.
const MIN_WINDOW: u64 = 2;
/// Connections opened at once.
pub const CONNECTS: usize = 32;
/// How long stragglers of a run may take to arrive before the next run.
const DRAIN: Duration = Duration::from_secs(10);

/// K rooms × N subscribers each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub rooms: usize,
    pub subscribers: usize,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} × {}", self.rooms, self.subscribers)
    }
}

impl Shape {
    /// Subscribers over all rooms.
    pub fn receivers(&self) -> u64 {
        (self.rooms * self.subscribers) as u64
    }
}

/// How long a run lasts, and how many make a figure.
#[derive(Clone)]
pub struct Timing {
    pub warmup: Duration,
    pub duration: Duration,
    pub runs: usize,
}

/// One publisher and its subscribers per room, connected once and reused by
/// every run of a shape (and by the profiler and part 6, which grows it).
pub struct Fleet {
    shape: Shape,
    rooms: Vec<String>,
    recorders: Vec<Arc<Recorder>>,
    publishers: Vec<Publisher>,
    receivers: Receivers,
    traffic: Arc<Traffic>,
    run: u32,
}

impl Fleet {
    pub async fn connect(server: &Server, shape: Shape) -> Result<Fleet> {
        let mut fleet = Fleet::publishers(server, shape).await?;
        fleet.grow(server, shape.subscribers).await?;
        Ok(fleet)
    }

    /// Fresh rooms with their publishers and no subscribers yet. Publishers
    /// come first so that in a sharded room (part 6) the publisher is a
    /// client of the room's own object, the sequencer, as it is in an
    /// unsharded room: both layouts publish the same way.
    async fn publishers(server: &Server, shape: Shape) -> Result<Fleet> {
        let rooms: Vec<String> = (0..shape.rooms)
            .map(|_| server.fresh_room(&format!("fanout{}", shape.subscribers)))
            .collect();
        let publishers = try_join_all(rooms.iter().map(|room| Publisher::connect(server, room)))
            .await
            .context("connecting publishers")?;
        Ok(Fleet {
            shape: Shape {
                rooms: shape.rooms,
                subscribers: 0,
            },
            recorders: rooms.iter().map(|_| Recorder::new()).collect(),
            rooms,
            publishers,
            receivers: Receivers::default(),
            traffic: Traffic::new(),
            run: 0,
        })
    }

    /// Connects subscribers until every room has `subscribers`.
    pub async fn grow(&mut self, server: &Server, subscribers: usize) -> Result<()> {
        let have = self.shape.subscribers;
        if subscribers <= have {
            return Ok(());
        }
        let started = Instant::now();
        let joins = (0..self.shape.rooms).flat_map(|room| (have..subscribers).map(move |_| room));
        let sockets: Vec<(usize, ws::Socket)> = futures_util::stream::iter(joins)
            .map(|room| {
                let path = server.ws_path(&self.rooms[room]);
                let traffic = self.traffic.clone();
                async move {
                    let socket = ws::connect(server.addr(), &path, traffic).await?;
                    Ok::<_, anyhow::Error>((room, socket))
                }
            })
            .buffer_unordered(CONNECTS)
            .try_collect()
            .await
            .context("connecting subscribers")?;
        for (room, socket) in sockets {
            self.receivers.push(socket, self.recorders[room].clone());
        }
        self.shape.subscribers = subscribers;
        eprintln!(
            "[{}] {} rooms × {} subscribers connected in {:.1} s",
            server.flavor.label(),
            self.shape.rooms,
            self.shape.subscribers,
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Rooms, and subscribers per room.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Subscribers per room.
    pub fn subscribers(&self) -> usize {
        self.shape.subscribers
    }

    /// The rooms' names, in the order of their publishers.
    pub fn rooms(&self) -> &[String] {
        &self.rooms
    }

    /// One closed-loop run; deliveries/s over the window after the warm-up.
    pub async fn saturate(&mut self, server: &Server, timing: &Timing) -> Result<Sample> {
        let run = self.begin();
        let fanout = self.shape.subscribers as u64;
        let window = (IN_FLIGHT / self.shape.receivers()).max(MIN_WINDOW);
        let start = Instant::now();
        let until = start + timing.warmup + timing.duration;
        let publishing = try_join_all(self.publishers.iter_mut().zip(&self.recorders).map(
            |(publisher, recorder)| load::windowed(publisher, run, recorder, fanout, window, until),
        ));
        let (recorders, traffic) = (&self.recorders, &self.traffic);
        // The window is a span of time, not a synchronisation point.
        let measuring = async {
            sleep_until(start + timing.warmup).await;
            let probe = Probe::start(server, traffic, recorders)?;
            sleep_until(until).await;
            let window = probe.elapsed();
            probe.finish(server, traffic, recorders, window)
        };
        let (published, sample) = tokio::join!(publishing, measuring);
        self.drain(&published?).await;
        Ok(self.with_rejections(sample?))
    }

    /// One open-loop run at `rate` messages/s per room.
    pub async fn paced(
        &mut self,
        server: &Server,
        rate: f64,
        duration: Duration,
    ) -> Result<Sample> {
        let run = self.begin();
        let probe = Probe::start(server, &self.traffic, &self.recorders)?;
        let rooms = self.publishers.len() as f64;
        let published = try_join_all(self.publishers.iter_mut().enumerate().map(
            |(k, publisher)| {
                let phase = Duration::from_secs_f64(k as f64 / rooms / rate);
                load::paced(publisher, run, rate, duration, phase)
            },
        ))
        .await?;
        self.drain(&published).await;
        let sample = probe.finish(server, &self.traffic, &self.recorders, duration)?;
        Ok(self.with_rejections(sample))
    }

    fn begin(&mut self) -> u32 {
        self.run += 1;
        for recorder in &self.recorders {
            recorder.begin(self.run);
        }
        self.run
    }

    /// Waits (bounded) until every room's subscribers have every message
    /// its publisher sent in this run.
    async fn drain(&self, published: &[u64]) {
        let deadline = Instant::now() + DRAIN;
        let fanout = self.shape.subscribers as u64;
        for (recorder, sent) in self.recorders.iter().zip(published) {
            recorder.wait_for(sent * fanout, deadline).await;
        }
    }

    fn with_rejections(&self, mut sample: Sample) -> Sample {
        sample.rejected = self.publishers.iter().map(|p| p.take_rejected()).sum();
        sample
    }

    pub async fn close(self) -> Result<()> {
        for publisher in self.publishers {
            publisher.close().await;
        }
        self.receivers.stop().await
    }
}
