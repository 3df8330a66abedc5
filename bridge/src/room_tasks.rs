//! The room tasks of this instance (docs/bridge.md, "Links and shutdown"): one per
//! room it relays, at most `--max-links` at once.
//!
//! Every room task holds its room's link (or is opening it), and a link
//! costs memory and a socket, so the tasks are capped: a room announced
//! while the cap is reached waits, rooms with messages pending ahead of
//! the others and each group in the order announced, and gets a link when
//! another one ends (idle, retired, superseded). A finished task leaves the
//! map at once, so the map holds what runs, never what ran.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use roomcast_protocol::wire::Registration;
use tokio::sync::mpsc;
use tokio::task::{Id, JoinSet};
use tracing::{debug, info, warn};

use crate::context::Bridge;
use crate::metrics::Metrics;
use crate::outbound::{self, Start};
use crate::stop::Stop;

/// Runs the room tasks for the rooms `announced` to this instance until
/// `stop`, then waits for them to drain.
pub async fn run(bridge: Arc<Bridge>, mut announced: mpsc::Receiver<Registration>, mut stop: Stop) {
    let start = {
        let (bridge, stop) = (bridge.clone(), stop.clone());
        move |room: String, start: Start| -> BoxFuture<'static, ()> {
            Box::pin(outbound::run(bridge.clone(), room, start, stop.clone()))
        }
    };
    let mut rooms = RoomTasks::new(bridge.max_links, bridge.metrics.clone(), start);
    loop {
        tokio::select! {
            registration = announced.recv() => match registration {
                Some(registration) => rooms.announce(registration),
                None => break,
            },
            _ = rooms.reap(), if rooms.running() > 0 => {},
            _ = stop.stopping() => break,
        }
    }
    rooms.drain().await;
}

/// The running room tasks and the rooms waiting for one.
pub struct RoomTasks<S> {
    start: S,
    max: usize,
    tasks: JoinSet<()>,
    /// The room of each task, to find it when the task ends (also when it
    /// panicked, which leaves only its id).
    rooms: HashMap<Id, String>,
    running: HashSet<String>,
    waiting: Waiting,
    metrics: Arc<Metrics>,
}

impl<S: Fn(String, Start) -> BoxFuture<'static, ()>> RoomTasks<S> {
    /// At most `max` tasks, each `start(room, how)`.
    pub fn new(max: usize, metrics: Arc<Metrics>, start: S) -> RoomTasks<S> {
        let max = max.max(1);
        metrics.links_max.set(max as i64);
        let rooms = RoomTasks {
            start,
            max,
            tasks: JoinSet::new(),
            rooms: HashMap::new(),
            running: HashSet::new(),
            waiting: Waiting::default(),
            metrics,
        };
        rooms.export();
        rooms
    }

    /// Starts a task for an announced room, or queues the room when the
    /// cap is reached; a room whose task runs is left alone.
    pub fn announce(&mut self, registration: Registration) {
        let Registration { room, pending } = registration;
        if self.running.contains(&room) {
            debug!(room, "announced again; its link is running");
        } else if self.running.len() < self.max {
            info!(room, pending, "relaying room");
            self.spawn(room, Start::Announced);
        } else {
            debug!(room, pending, "at --max-links: the room waits for a link");
            self.waiting.push(room, pending);
        }
        self.export();
    }

    /// Waits for a task to end, forgets it and starts the next waiting
    /// room in its place. Pending forever while nothing runs.
    pub async fn reap(&mut self) {
        let ended = match self.tasks.join_next_with_id().await {
            Some(Ok((id, ()))) => id,
            Some(Err(e)) => {
                warn!("a room link task failed: {e}");
                e.id()
            }
            None => return std::future::pending().await,
        };
        if let Some(room) = self.rooms.remove(&ended) {
            self.running.remove(&room);
        }
        while self.running.len() < self.max {
            let Some(room) = self.waiting.pop() else {
                break;
            };
            info!(room, "relaying room (it waited for a link)");
            self.spawn(room, Start::Waited);
        }
        self.export();
    }

    /// Rooms with a running task.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Waits for every task (the bridge is stopping: they drain and end);
    /// rooms still waiting are left to the next instance or start.
    pub async fn drain(mut self) {
        self.waiting = Waiting::default();
        while self.running() > 0 {
            self.reap().await;
        }
    }

    fn spawn(&mut self, room: String, start: Start) {
        let handle = self.tasks.spawn((self.start)(room.clone(), start));
        self.rooms.insert(handle.id(), room.clone());
        self.running.insert(room);
    }

    fn export(&self) {
        self.metrics.links.set(self.running.len() as i64);
        self.metrics.links_waiting.set(self.waiting.len() as i64);
    }
}

/// Rooms waiting for a link: those with messages pending first, each group
/// in the order announced; a room is queued once.
#[derive(Default)]
struct Waiting {
    /// `(nothing pending, arrival)` → room: iteration order is the order
    /// rooms get links in.
    order: BTreeMap<(bool, u64), String>,
    places: HashMap<String, (bool, u64)>,
    arrivals: u64,
}

impl Waiting {
    fn push(&mut self, room: String, pending: u64) {
        let quiet = pending == 0;
        match self.places.get(&room).copied() {
            // Announced again with messages pending: it moves up among
            // the rooms with pending messages, keeping its arrival.
            Some((true, arrival)) if !quiet => {
                self.order.remove(&(true, arrival));
                self.order.insert((false, arrival), room.clone());
                self.places.insert(room, (false, arrival));
            }
            Some(_) => {}
            None => {
                let place = (quiet, self.arrivals);
                self.arrivals += 1;
                self.order.insert(place, room.clone());
                self.places.insert(room, place);
            }
        }
    }

    fn pop(&mut self) -> Option<String> {
        let (_, room) = self.order.pop_first()?;
        self.places.remove(&room);
        Some(room)
    }

    fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;

    /// Room tasks that run until the test ends them, in the order started.
    #[derive(Clone, Default)]
    struct Script {
        started: Arc<Mutex<Vec<(String, Start)>>>,
        enders: Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>,
    }

    impl Script {
        fn start(&self) -> impl Fn(String, Start) -> BoxFuture<'static, ()> {
            let script = self.clone();
            move |room: String, start: Start| {
                let (end, ended) = oneshot::channel();
                script.started.lock().unwrap().push((room.clone(), start));
                script.enders.lock().unwrap().insert(room, end);
                Box::pin(async move {
                    let _ = ended.await;
                })
            }
        }

        fn end(&self, room: &str) {
            let end = self.enders.lock().unwrap().remove(room).expect("running");
            end.send(()).unwrap();
        }

        fn started(&self) -> Vec<String> {
            let started = self.started.lock().unwrap();
            started.iter().map(|(room, _)| room.clone()).collect()
        }

        fn waited(&self) -> Vec<String> {
            let started = self.started.lock().unwrap();
            started
                .iter()
                .filter(|(_, start)| *start == Start::Waited)
                .map(|(room, _)| room.clone())
                .collect()
        }
    }

    fn announce(room: &str, pending: u64) -> Registration {
        Registration {
            room: room.into(),
            pending,
        }
    }

    async fn reap<S: Fn(String, Start) -> BoxFuture<'static, ()>>(rooms: &mut RoomTasks<S>) {
        tokio::time::timeout(Duration::from_secs(5), rooms.reap())
            .await
            .expect("a task ended");
    }

    fn gauges(metrics: &Metrics) -> (i64, i64, i64) {
        (
            metrics.links.get(),
            metrics.links_waiting.get(),
            metrics.links_max.get(),
        )
    }

    #[tokio::test]
    async fn rooms_beyond_the_cap_wait_pending_first_then_in_order() {
        let script = Script::default();
        let metrics = Arc::new(Metrics::default());
        let mut rooms = RoomTasks::new(2, metrics.clone(), script.start());
        for (room, pending) in [("a", 0), ("b", 0), ("c", 0), ("d", 5), ("e", 0), ("f", 1)] {
            rooms.announce(announce(room, pending));
        }
        assert_eq!(script.started(), ["a", "b"]);
        assert_eq!(gauges(&metrics), (2, 4, 2));
        // Announced again: neither a running room nor a queued one twice;
        // a quiet room that now has messages pending moves up.
        rooms.announce(announce("a", 3));
        rooms.announce(announce("c", 0));
        rooms.announce(announce("e", 2));
        assert_eq!(gauges(&metrics), (2, 4, 2));

        let mut order = Vec::new();
        for ending in ["a", "b", "d", "e", "f", "c"] {
            script.end(ending);
            reap(&mut rooms).await;
            order.push(script.started().last().unwrap().clone());
        }
        assert_eq!(order, ["d", "e", "f", "c", "c", "c"]);
        assert_eq!(script.started(), ["a", "b", "d", "e", "f", "c"]);
        assert_eq!(
            script.waited(),
            ["d", "e", "f", "c"],
            "started after waiting"
        );
        assert_eq!(gauges(&metrics), (0, 0, 2));
    }

    #[tokio::test]
    async fn finished_tasks_leave_the_map_and_their_room_can_start_again() {
        let script = Script::default();
        let metrics = Arc::new(Metrics::default());
        let mut rooms = RoomTasks::new(10, metrics.clone(), script.start());
        for round in 0..50 {
            rooms.announce(announce("r", 1));
            rooms.announce(announce(&format!("once-{round}"), 1));
            script.end("r");
            reap(&mut rooms).await;
            script.end(&format!("once-{round}"));
            reap(&mut rooms).await;
            assert_eq!(rooms.running(), 0);
        }
        assert!(rooms.rooms.is_empty() && rooms.running.is_empty());
        assert_eq!(script.started().iter().filter(|r| *r == "r").count(), 50);
        assert_eq!(gauges(&metrics), (0, 0, 10));
    }

    #[tokio::test]
    async fn a_panicking_task_is_reaped_too() {
        let metrics = Arc::new(Metrics::default());
        let start = |room: String, _: Start| -> BoxFuture<'static, ()> {
            Box::pin(async move { panic!("task for {room} failed") })
        };
        let mut rooms = RoomTasks::new(1, metrics.clone(), start);
        rooms.announce(announce("boom", 0));
        rooms.announce(announce("next", 0));
        assert_eq!(gauges(&metrics), (1, 1, 1));
        reap(&mut rooms).await;
        assert_eq!(
            gauges(&metrics),
            (1, 0, 1),
            "the waiting room took its place"
        );
        reap(&mut rooms).await;
        assert_eq!(gauges(&metrics), (0, 0, 1));
        assert!(rooms.rooms.is_empty());
    }

    #[tokio::test]
    async fn a_stop_drops_the_queue_and_drains_the_tasks() {
        let script = Script::default();
        let metrics = Arc::new(Metrics::default());
        let mut rooms = RoomTasks::new(1, metrics, script.start());
        rooms.announce(announce("a", 0));
        rooms.announce(announce("b", 0));
        let draining = tokio::spawn(rooms.drain());
        script.end("a");
        tokio::time::timeout(Duration::from_secs(5), draining)
            .await
            .expect("drained")
            .unwrap();
        assert_eq!(
            script.started(),
            ["a"],
            "a waiting room is not started on the way out"
        );
    }
}
