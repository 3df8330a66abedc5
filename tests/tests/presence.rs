//! End to end: presence and occupancy (docs/protocol.md, "Presence").
//! Three users, one on two devices; a reconnect within the grace that is no
//! leave and a kill without a close that is one after the grace; a sharded
//! room whose every subscriber sees exact counts and every member; a room
//! past its members limit that counts only and still pages its members over
//! HTTP; tokens without the presence right, which see counts and no
//! members, over WebSocket and HTTP; and joins, leaves and counts reaching
//! Kafka's `roomcast.presence` through the bridge.
//!
//! A [`Watcher`] is a client that keeps the view a client library would:
//! the state it joined with, every diff applied, the latest counts. Tests
//! wait for the view to reach what they expect, within a bound, and check
//! along the way what must never happen (a member that must stay, gone).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::message::Message as _;
use roomcast_tests::records::collect;
use roomcast_tests::{
    full_token, presence_token, room, BridgeProcess, Broker, Client, Http, Worker,
};
use serde_json::{json, Value};
use tokio::time::Instant;

/// Flushes every 200 ms, and a grace of 3 s, so that a test sees several
/// intervals within a grace.
const VARS: [(&str, &str); 5] = [
    ("PRESENCE_INTERVAL_MS", "200"),
    ("PRESENCE_GRACE_MS", "3000"),
    ("RATE_PER_SEC", "1000"),
    ("RATE_BURST", "1000"),
    ("ROOM_RATE_PER_SEC", "100000"),
];
const GRACE: Duration = Duration::from_millis(3000);
/// How long a view may take to show a change: an interval, a grace, and
/// room for a slow machine.
const SETTLE: Duration = Duration::from_secs(15);

/// A client and its view of the room's presence.
struct Watcher {
    client: Client,
    conn_id: String,
    /// Member → its connections.
    members: BTreeMap<String, BTreeSet<String>>,
    /// What each meta shows, by `conn_id`.
    infos: BTreeMap<String, Value>,
    occupancy: Value,
    counts_only: bool,
    /// A `presence_state` said `more`: the next page adds to this one.
    paging: bool,
    /// Frames of each kind received after the welcome.
    received: BTreeMap<String, usize>,
}

impl Watcher {
    async fn join(worker: &Worker, room: &str, token: &str) -> Watcher {
        let url = worker.ws_url(&format!("/v1/rooms/{room}/ws?token={token}"));
        let mut client = Client::connect(&url).await;
        client.reads_presence = true;
        let welcome = client.expect("welcome").await;
        let mut watcher = Watcher {
            client,
            conn_id: welcome["conn_id"].as_str().expect("conn_id").to_owned(),
            members: BTreeMap::new(),
            infos: BTreeMap::new(),
            occupancy: Value::Null,
            counts_only: false,
            paging: false,
            received: BTreeMap::new(),
        };
        // Every client gets the counts right after its welcome (and the
        // members before them, when it may see them).
        watcher
            .until("the first occupancy", |w| !w.occupancy.is_null())
            .await;
        watcher
    }

    /// Adds the metas of `members` (a state page's, or a diff's joins).
    fn joined(&mut self, members: &Value) {
        for member in members.as_array().expect("members") {
            let sub = member["sub"].as_str().unwrap().to_owned();
            for (conn, info) in metas(member) {
                self.members
                    .entry(sub.clone())
                    .or_default()
                    .insert(conn.clone());
                self.infos.insert(conn, info);
            }
        }
    }

    fn apply(&mut self, frame: &Value) {
        let kind = frame["type"].as_str().unwrap_or_default().to_owned();
        *self.received.entry(kind.clone()).or_default() += 1;
        match kind.as_str() {
            "presence_state" => {
                // The pages of one state add up; a new state starts over.
                if !self.paging {
                    self.members.clear();
                }
                self.paging = frame["more"] == true;
                self.counts_only = frame["counts_only"] == true;
                self.joined(&frame["members"]);
            }
            "presence" => {
                if frame["counts_only"] == true {
                    self.counts_only = true;
                }
                for member in frame["leaves"].as_array().expect("leaves") {
                    let sub = member["sub"].as_str().unwrap();
                    if let Some(conns) = self.members.get_mut(sub) {
                        for (conn, _) in metas(member) {
                            conns.remove(&conn);
                        }
                        if conns.is_empty() {
                            self.members.remove(sub);
                        }
                    }
                }
                self.joined(&frame["joins"]);
            }
            "occupancy" => self.occupancy = frame.clone(),
            _ => {}
        }
    }

    /// Reads frames until `done` holds, within [`SETTLE`].
    async fn until(&mut self, what: &str, done: impl Fn(&Watcher) -> bool) {
        self.until_checking(what, done, |_| Ok(())).await
    }

    /// Like [`Watcher::until`], and `never` must hold after every frame.
    async fn until_checking(
        &mut self,
        what: &str,
        done: impl Fn(&Watcher) -> bool,
        never: impl Fn(&Watcher) -> Result<(), String>,
    ) {
        let deadline = Instant::now() + SETTLE;
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(text) = self.client.next_text_within(left).await else {
                panic!(
                    "{what}: not seen within {SETTLE:?}; members {:?}, occupancy {}",
                    self.members, self.occupancy
                );
            };
            let frame: Value = serde_json::from_str(&text).expect("JSON");
            self.apply(&frame);
            if let Err(broken) = never(self) {
                panic!("{what}: {broken} after {frame}");
            }
        }
    }

    fn subs(&self) -> Vec<&str> {
        self.members.keys().map(String::as_str).collect()
    }

    fn devices(&self, sub: &str) -> usize {
        self.members.get(sub).map_or(0, BTreeSet::len)
    }

    fn counts(&self) -> (u64, u64, u64) {
        let n = |k: &str| self.occupancy[k].as_u64().unwrap_or(u64::MAX);
        (n("connections"), n("users"), n("members"))
    }
}

/// A member's metas: `(conn_id, info)`.
fn metas(member: &Value) -> Vec<(String, Value)> {
    member["metas"]
        .as_array()
        .expect("metas")
        .iter()
        .map(|m| (m["conn_id"].as_str().unwrap().to_owned(), m["info"].clone()))
        .collect()
}

fn with_presence(sub: &str, info: Option<Value>) -> String {
    presence_token(sub, "*", info, 3600)
}

async fn members_page(worker: &Worker, room: &str, token: &str, query: &str) -> Value {
    let url = worker.url(&format!("/v1/rooms/{room}/presence{query}"));
    let (status, page) = Http::default().get(&url, Some(token)).await;
    assert_eq!(status, 200, "{page}");
    page
}

#[tokio::test]
async fn three_users_one_on_two_devices() {
    let worker = Worker::start(&VARS).await;
    let room = room("presence");
    let mut watch = Watcher::join(&worker, &room, &with_presence("watch", None)).await;
    assert_eq!(watch.received.get("presence_state"), Some(&1));
    assert_eq!(watch.subs(), vec!["watch"], "it sees itself");

    let ann_phone = Watcher::join(
        &worker,
        &room,
        &with_presence("ann", Some(json!({"name": "Ann"}))),
    )
    .await;
    let ann_laptop = Watcher::join(&worker, &room, &with_presence("ann", None)).await;
    let bob = Watcher::join(&worker, &room, &with_presence("bob", None)).await;
    // Counted, never listed: no presence right.
    let mut cy = Watcher::join(&worker, &room, &full_token("cy")).await;
    assert_eq!(cy.received.get("presence_state"), None);

    watch
        .until("three members and one connection more", |w| {
            w.subs() == ["ann", "bob", "watch"] && w.devices("ann") == 2 && w.counts() == (5, 4, 3)
        })
        .await;
    assert_eq!(watch.infos[&ann_phone.conn_id], json!({"name": "Ann"}));
    assert_eq!(watch.infos[&ann_laptop.conn_id], Value::Null);

    cy.until("the counts", |w| w.counts() == (5, 4, 3)).await;
    assert!(cy.members.is_empty());
    assert_eq!(
        cy.received.get("presence"),
        None,
        "no diffs without the right"
    );

    // Over HTTP: members for a token that may see them, counts for others.
    let page = members_page(&worker, &room, &with_presence("reader", None), "").await;
    let subs: Vec<&str> = page["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["sub"].as_str().unwrap())
        .collect();
    assert_eq!(subs, vec!["ann", "bob", "watch"]);
    assert_eq!(
        page["occupancy"],
        json!({"connections": 5, "users": 4, "members": 3})
    );
    assert_eq!(page["next"], Value::Null);
    let page = members_page(&worker, &room, &full_token("reader"), "").await;
    assert_eq!(page["members"], json!([]));
    assert_eq!(page["occupancy"]["members"], 3);

    // A device closes cleanly: ann stays with one; bob closes: he leaves.
    ann_laptop.client.close().await;
    watch
        .until("ann on one device", |w| {
            w.devices("ann") == 1 && w.counts() == (4, 4, 3)
        })
        .await;
    bob.client.close().await;
    watch
        .until("bob gone", |w| {
            w.subs() == ["ann", "watch"] && w.counts() == (3, 3, 2)
        })
        .await;
    cy.until("the counts without bob", |w| w.counts() == (3, 3, 2))
        .await;

    // A storm: ten joins at once reach the watcher in one diff per
    // interval at most, not a frame per join.
    let before = watch.received.get("presence").copied().unwrap_or(0);
    let started = Instant::now();
    let storm = futures_util::future::join_all((0..10).map(|i| {
        let token = with_presence(&format!("s{i}"), None);
        let (worker, room) = (&worker, &room);
        async move { Watcher::join(worker, room, &token).await }
    }))
    .await;
    watch.until("the storm in", |w| w.subs().len() == 12).await;
    let diffs = watch.received["presence"] - before;
    let intervals = started.elapsed().as_millis() as usize / 200 + 1;
    assert!(diffs <= intervals, "{diffs} diffs in {intervals} intervals");
    drop((ann_phone, storm));
}

#[tokio::test]
async fn a_reconnect_within_the_grace_is_no_leave_and_a_kill_is_one_after_it() {
    let worker = Worker::start(&VARS).await;
    let room = room("grace");
    let mut watch = Watcher::join(&worker, &room, &with_presence("watch", None)).await;
    let bob = Watcher::join(&worker, &room, &with_presence("bob", None)).await;
    watch.until("bob", |w| w.subs() == ["bob", "watch"]).await;

    // Killed without a close frame, back at once: bob never leaves, the
    // counts never drop, and his new connection replaces the old one.
    let old = bob.conn_id.clone();
    drop(bob);
    let bob = Watcher::join(&worker, &room, &with_presence("bob", None)).await;
    let new = bob.conn_id.clone();
    watch
        .until_checking(
            "bob's new connection in place of the old",
            |w| {
                w.members
                    .get("bob")
                    .is_some_and(|c| c.contains(&new) && !c.contains(&old))
            },
            |w| {
                if !w.members.contains_key("bob") {
                    return Err("bob left".into());
                }
                if w.counts().1 < 2 || w.counts().2 < 2 {
                    return Err(format!("the counts dropped: {}", w.occupancy));
                }
                Ok(())
            },
        )
        .await;
    assert_eq!(watch.counts(), (2, 2, 2));

    // Killed and not back: he leaves, but not before the grace is over.
    let killed = Instant::now();
    drop(bob);
    watch.until("bob gone", |w| w.subs() == ["watch"]).await;
    let after = killed.elapsed();
    assert!(
        after >= GRACE - Duration::from_millis(300),
        "left after {after:?}"
    );
    watch
        .until("the counts without bob", |w| w.counts() == (1, 1, 1))
        .await;
}

#[tokio::test]
async fn a_sharded_room_gives_every_subscriber_the_same_answers() {
    let mut vars = VARS.to_vec();
    vars.push(("ROOM_SHARD_SIZE", "2"));
    let worker = Worker::start(&vars).await;
    let room = room("sharded-presence");
    // Seven connections over the room and three shards; one user on two.
    let mut watchers = Vec::new();
    for sub in ["u0", "u1", "u2", "u3", "u4", "u5", "u5"] {
        watchers.push(Watcher::join(&worker, &room, &with_presence(sub, None)).await);
    }
    let mut plain = Watcher::join(&worker, &room, &full_token("plain")).await;
    let stats = worker.stats(&room).await;
    assert!(stats["shards"].as_u64().unwrap() >= 3, "{stats}");
    let everyone = ["u0", "u1", "u2", "u3", "u4", "u5"];
    for w in &mut watchers {
        w.until("every member and exact counts", |w| {
            w.subs() == everyone && w.devices("u5") == 2 && w.counts() == (8, 7, 6)
        })
        .await;
    }
    plain.until("the counts", |w| w.counts() == (8, 7, 6)).await;
    assert!(plain.members.is_empty());

    // A leave on one shard reaches the subscribers on every object.
    let gone = watchers.remove(3);
    gone.client.close().await;
    for w in &mut watchers {
        w.until("u3 gone", |w| {
            !w.members.contains_key("u3") && w.counts() == (7, 6, 5)
        })
        .await;
    }
    let page = members_page(&worker, &room, &with_presence("reader", None), "?limit=2").await;
    assert_eq!(
        page["occupancy"],
        json!({"connections": 7, "users": 6, "members": 5})
    );
    assert_eq!(page["next"], "u1");
}

#[tokio::test]
async fn past_the_members_limit_the_room_counts_only() {
    let mut vars = VARS.to_vec();
    vars.push(("PRESENCE_MEMBERS_LIMIT", "3"));
    let worker = Worker::start(&vars).await;
    let room = room("crowd");
    let mut watch = Watcher::join(&worker, &room, &with_presence("m0", None)).await;
    let mut others = Vec::new();
    for sub in ["m1", "m2"] {
        others.push(Watcher::join(&worker, &room, &with_presence(sub, None)).await);
    }
    watch.until("three members", |w| w.subs().len() == 3).await;
    others.push(Watcher::join(&worker, &room, &with_presence("m3", None)).await);
    watch
        .until("counts only", |w| w.counts_only && w.counts() == (4, 4, 4))
        .await;
    let late = Watcher::join(&worker, &room, &with_presence("m4", None)).await;
    assert!(late.counts_only && late.members.is_empty());
    watch
        .until("five counted", |w| w.counts() == (5, 5, 5))
        .await;

    // The list stays readable over HTTP, page by page.
    let token = with_presence("reader", None);
    let first = members_page(&worker, &room, &token, "?limit=3").await;
    assert_eq!(first["counts_only"], true);
    assert_eq!(first["next"], "m2");
    let rest = members_page(&worker, &room, &token, "?after=m2&limit=3").await;
    let subs: Vec<&str> = first["members"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["members"].as_array().unwrap())
        .map(|m| m["sub"].as_str().unwrap())
        .collect();
    assert_eq!(subs, vec!["m0", "m1", "m2", "m3", "m4"]);
    assert_eq!(rest["next"], Value::Null);

    // Back under nine tenths of the limit: the state again, then diffs.
    drop(late);
    for other in others.drain(..) {
        other.client.close().await;
    }
    watch
        .until("the members again", |w| {
            !w.counts_only && w.subs() == ["m0"]
        })
        .await;
}

#[tokio::test]
async fn presence_reaches_kafka_through_the_bridge() {
    let broker = Broker::start().await;
    let mut vars = VARS.to_vec();
    vars.push(("BRIDGE", "on"));
    let worker = Worker::start(&vars).await;
    let _bridge = BridgeProcess::start(&worker, &broker, "presence", &[]).await;
    let topic = broker.consumer("roomcast.presence");
    let room = room("relayed-presence");
    // A room that has stored nothing: its presence alone has the bridge
    // link it.
    let ann = Watcher::join(&worker, &room, &with_presence("ann", Some(json!({"n": 1})))).await;
    let _cy = Watcher::join(&worker, &room, &full_token("cy")).await;
    let records = collect(&topic, Duration::from_secs(30), |records| {
        records.iter().any(|r| {
            let value: Value = serde_json::from_slice(r.payload().unwrap_or_default()).unwrap();
            value["occupancy"]["users"] == 2
        })
    })
    .await;
    let values: Vec<Value> = records
        .iter()
        .inspect(|r| assert_eq!(r.key(), Some(room.as_bytes())))
        .map(|r| serde_json::from_slice(r.payload().unwrap()).unwrap())
        .collect();
    let joined = values
        .iter()
        .flat_map(|v| v["joins"].as_array().cloned().unwrap_or_default())
        .find(|m| m["sub"] == "ann")
        .unwrap_or_else(|| panic!("no join of ann in {values:?}"));
    assert_eq!(joined["metas"][0]["conn_id"], ann.conn_id.as_str());
    assert_eq!(joined["metas"][0]["info"], json!({"n": 1}));
    assert!(values
        .iter()
        .all(|v| v["room"] == room.as_str() && v["at"].is_u64()));

    // A leave reaches it too.
    ann.client.close().await;
    let records = collect(&topic, Duration::from_secs(30), |records| {
        records.iter().any(|r| {
            let value: Value = serde_json::from_slice(r.payload().unwrap_or_default()).unwrap();
            value["leaves"]
                .as_array()
                .is_some_and(|l| l.iter().any(|m| m["sub"] == "ann"))
        })
    })
    .await;
    let last: Value = serde_json::from_slice(records.last().unwrap().payload().unwrap()).unwrap();
    assert_eq!(
        last["occupancy"],
        json!({"connections": 1, "users": 1, "members": 0})
    );
}
