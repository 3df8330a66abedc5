//! End to end, what a room's work costs, counted exactly: SQLite statements
//! and rows read and written as the runtime reports them (Cloudflare bills
//! by row), and socket attachments written, read from `/stats`. Timings stay
//! in the benchmarks; these counts are deterministic, so a publish that goes
//! back to more statements or rows fails here, and so does one that stops
//! being counted (every figure is held from below as well as from above).
//!
//! What is priced: a publish (over a socket, in a batch, and in a room whose
//! bridge confirms as it goes), a `bridge_ack` (its cursor write, and the
//! outbox rows it lets go), and the alarm's sweep, whose statements count
//! like any other. `/stats` itself costs nothing, so reading it between
//! steps does not disturb the figures; what can is the room's own
//! background work (its counters, written at most every 10 s, and an alarm
//! every 10 s while a link is open), which is why figures are averaged.
//!
//! Every limit is on, with budgets big enough for the load.

use std::time::Duration;

use roomcast_protocol::clock::now_ms;
use roomcast_tests::{bridge_link, bridge_token, full_token, room, Client, Http, Worker};
use serde_json::{json, Value};
use tokio::time::{sleep, Instant};

const LIMITS: &[(&str, &str)] = &[
    ("RATE_PER_SEC", "100000"),
    ("RATE_BURST", "100000"),
    ("ROOM_RATE_PER_SEC", "1000000"),
];

/// What a room has done so far, or between two readings.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Cost {
    statements: f64,
    rows_read: f64,
    rows_written: f64,
    attachments: f64,
}

impl Cost {
    /// Per one of `n` events.
    fn per(self, n: f64) -> Cost {
        Cost {
            statements: self.statements / n,
            rows_read: self.rows_read / n,
            rows_written: self.rows_written / n,
            attachments: self.attachments / n,
        }
    }
}

impl std::ops::Sub for Cost {
    type Output = Cost;
    fn sub(self, earlier: Cost) -> Cost {
        Cost {
            statements: self.statements - earlier.statements,
            rows_read: self.rows_read - earlier.rows_read,
            rows_written: self.rows_written - earlier.rows_written,
            attachments: self.attachments - earlier.attachments,
        }
    }
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, more: Cost) {
        self.statements += more.statements;
        self.rows_read += more.rows_read;
        self.rows_written += more.rows_written;
        self.attachments += more.attachments;
    }
}

/// What a room has done so far, with the `/stats` it was read from.
async fn cost_and_stats(worker: &Worker, room: &str) -> (Cost, Value) {
    let stats = worker.stats(room).await;
    let n = |v: &Value| v.as_f64().unwrap_or_else(|| panic!("a number: {stats}"));
    let cost = Cost {
        statements: n(&stats["storage"]["statements"]),
        rows_read: n(&stats["storage"]["rows_read"]),
        rows_written: n(&stats["storage"]["rows_written"]),
        attachments: n(&stats["attachment_writes"]),
    };
    (cost, stats)
}

async fn cost(worker: &Worker, room: &str) -> Cost {
    cost_and_stats(worker, room).await.0
}

/// Asserts `got` is `expected` to within `slack` (the room's background
/// work spread over the events averaged).
fn about(what: &str, got: f64, expected: f64, slack: f64) {
    assert!(
        (got - expected).abs() <= slack,
        "{what}: {got:.3}, expected {expected} (± {slack})"
    );
}

/// Publishes `count` messages with ids over the socket, pipelined, and
/// waits for every ack.
async fn publish_ws(client: &mut Client, from: u64, count: u64) {
    for n in from..from + count {
        client
            .send_json(json!({"type": "publish", "data": {"n": n}, "id": format!("m-{n}"), "ref": n.to_string()}))
            .await;
    }
    let mut acked = 0;
    while acked < count {
        let frame = client.next_json().await;
        match frame["type"].as_str() {
            Some("ack") => acked += 1,
            Some("message") => {}
            _ => panic!("unexpected frame {frame}"),
        }
    }
}

#[tokio::test]
async fn a_publish_costs_one_statement_and_one_row() {
    let worker = Worker::start(LIMITS).await;
    let r = room("cost");
    let token = full_token("publisher");
    let mut client =
        Client::connect(&worker.ws_url(&format!("/v1/rooms/{r}/ws?token={token}"))).await;
    client.expect("welcome").await;
    // Fill the room to its history limit first: in the steady state every
    // publish overwrites the oldest message's slot.
    publish_ws(&mut client, 0, 1000).await;
    let before = cost(&worker, &r).await;
    publish_ws(&mut client, 1000, 1000).await;
    let per = (cost(&worker, &r).await - before).per(1000.0);
    println!("per WebSocket publish: {per:?}");
    about("statements per publish", per.statements, 1.0, 0.05);
    about("rows written per publish", per.rows_written, 1.0, 0.05);
    assert!(
        per.attachments <= 0.05,
        "{} attachment writes per publish",
        per.attachments
    );
}

#[tokio::test]
async fn a_batch_of_500_costs_one_row_a_message() {
    let worker = Worker::start(LIMITS).await;
    let r = room("batch-cost");
    let http = Http::default();
    let url = worker.url(&format!("/v1/rooms/{r}/messages"));
    let token = full_token("batcher");
    let batch = |from: u64| {
        let messages: Vec<Value> = (from..from + 500)
            .map(|n| json!({"data": {"n": n}, "id": format!("b-{n}")}))
            .collect();
        json!({ "messages": messages }).to_string()
    };
    // Two batches fill the room; the next two are the steady state.
    for from in [0, 500] {
        assert_eq!(http.post(&url, &token, &batch(from)).await.0, 201);
    }
    let before = cost(&worker, &r).await;
    for from in [1000, 1500] {
        let (status, body) = http.post(&url, &token, &batch(from)).await;
        assert_eq!(status, 201, "{body}");
    }
    let spent = cost(&worker, &r).await - before;
    let statements = spent.statements / 2.0;
    let rows = spent.rows_written / 1000.0;
    println!("per batch of 500: {statements} statements; {rows:.3} rows written per message");
    assert!(
        (1.0..=45.0).contains(&statements),
        "{statements} statements per batch of 500"
    );
    about("rows written per message", rows, 1.0, 0.05);
}

/// The seq of the next `message` the link carries (`stats` frames skipped).
async fn relayed(link: &mut Client) -> u64 {
    loop {
        let frame = link.next_json().await;
        match frame["type"].as_str() {
            Some("message") => return frame["seq"].as_u64().expect("seq"),
            Some("stats") => {}
            _ => panic!("unexpected frame on the link: {frame}"),
        }
    }
}

async fn ack(link: &mut Client, seq: u64) {
    link.send_json(json!({"type": "bridge_ack", "seq": seq}))
        .await;
}

/// Returns once the room has handled every frame sent on the link so far.
/// No `message` may come first: the acks before had nothing left to send.
async fn settle(link: &mut Client) {
    for text in link.until_link_settled().await {
        let frame: Value = serde_json::from_str(&text).expect("a JSON frame");
        assert_eq!(
            frame["type"], "stats",
            "unexpected frame on the link: {frame}"
        );
    }
}

#[tokio::test]
async fn in_a_bridged_room_a_publish_costs_one_row_and_an_ack_its_cursor() {
    const ROUNDS: u64 = 200;
    let worker = Worker::start(LIMITS).await;
    let r = room("bridged-cost");
    let (mut link, _) = bridge_link(&worker, &r, "cost").await;
    let token = full_token("publisher");
    let mut client =
        Client::connect(&worker.ws_url(&format!("/v1/rooms/{r}/ws?token={token}"))).await;
    client.expect("welcome").await;
    // A full ring, all of it confirmed: the steady state of a room whose
    // bridge keeps up.
    publish_ws(&mut client, 0, 1000).await;
    for seq in 1..=1000 {
        assert_eq!(relayed(&mut link).await, seq);
    }
    ack(&mut link, 1000).await;
    settle(&mut link).await;

    // The bridge confirms each message as it gets it.
    let (mut publishes, mut acks) = (Cost::default(), Cost::default());
    for n in 1000..1000 + ROUNDS {
        let before = cost(&worker, &r).await;
        publish_ws(&mut client, n, 1).await;
        assert_eq!(relayed(&mut link).await, n + 1);
        let published = cost(&worker, &r).await;
        ack(&mut link, n + 1).await;
        settle(&mut link).await;
        let acked = cost(&worker, &r).await;
        publishes += published - before;
        acks += acked - published;
    }
    let (publish, ack) = (publishes.per(ROUNDS as f64), acks.per(ROUNDS as f64));
    println!("bridged room, per publish: {publish:?}; per ack of one message: {ack:?}");
    // A publish writes its ring slot, which the bridge already let go, and
    // reaches the link without a read.
    about("statements per publish", publish.statements, 1.0, 0.05);
    about("rows written per publish", publish.rows_written, 1.0, 0.05);
    about("rows read per publish", publish.rows_read, 1.0, 0.05);
    // An ack counts what it confirms in the outbox and in the ring (one
    // statement each, reading the confirmed rows) and writes the cursor:
    // three statements, one row written, nothing to delete.
    about("statements per ack", ack.statements, 3.0, 0.05);
    about("rows written per ack", ack.rows_written, 1.0, 0.05);
    about("rows read per ack", ack.rows_read, 4.0, 0.1);
    let (_, stats) = cost_and_stats(&worker, &r).await;
    assert_eq!(
        (stats["cursor"].as_u64(), stats["pending"].as_u64()),
        (Some(1000 + ROUNDS), Some(0)),
        "{stats}"
    );
}

#[tokio::test]
async fn an_ack_costs_its_cursor_and_the_outbox_rows_it_lets_go() {
    const RING: u64 = 100;
    const BEHIND: u64 = 150;
    const ROUNDS: u64 = 10;
    let mut vars = LIMITS.to_vec();
    vars.push(("HISTORY_LIMIT", "100"));
    let worker = Worker::start(&vars).await;
    let r = room("outbox-cost");
    let (mut link, _) = bridge_link(&worker, &r, "cost").await;
    let token = full_token("publisher");
    let mut client =
        Client::connect(&worker.ws_url(&format!("/v1/rooms/{r}/ws?token={token}"))).await;
    client.expect("welcome").await;
    publish_ws(&mut client, 0, RING).await;
    for seq in 1..=RING {
        assert_eq!(relayed(&mut link).await, seq);
    }
    ack(&mut link, RING).await;
    settle(&mut link).await;

    // Each round the bridge falls half a ring more than a whole history
    // behind, then confirms everything at once.
    let (mut publishes, mut acks) = (Cost::default(), Cost::default());
    let mut head = RING;
    for _ in 0..ROUNDS {
        let before = cost(&worker, &r).await;
        publish_ws(&mut client, head, BEHIND).await;
        for seq in head + 1..=head + BEHIND {
            assert_eq!(relayed(&mut link).await, seq);
        }
        head += BEHIND;
        let published = cost(&worker, &r).await;
        ack(&mut link, head).await;
        settle(&mut link).await;
        let acked = cost(&worker, &r).await;
        publishes += published - before;
        acks += acked - published;
    }
    let (publish, ack) = (publishes.per(ROUNDS as f64), acks.per(ROUNDS as f64));
    println!(
        "per {BEHIND} publishes with the bridge behind: {publish:?}; per ack of them: {ack:?}"
    );
    let spilled = BEHIND - RING;
    // The first RING publishes overwrite confirmed slots (one statement,
    // one row each); the other 50 overwrite messages the bridge still
    // needs, which move to the outbox first (one statement and one row
    // more each).
    about(
        "statements per round of publishes",
        publish.statements,
        (BEHIND + spilled) as f64,
        1.0,
    );
    about(
        "rows written per round of publishes",
        publish.rows_written,
        (BEHIND + spilled) as f64,
        1.0,
    );
    // The ack: the cursor row, and the outbox rows it lets go.
    about(
        "rows written per ack",
        ack.rows_written,
        (1 + spilled) as f64,
        0.5,
    );
    // Count in the outbox, count in the ring (two key ranges: the run of
    // seqs acked wraps around the ring's slots in every round), delete from
    // the outbox, write the cursor.
    about("statements per ack", ack.statements, 5.0, 0.5);
    let (_, stats) = cost_and_stats(&worker, &r).await;
    assert_eq!(
        (stats["cursor"].as_u64(), stats["pending"].as_u64()),
        (Some(head), Some(0)),
        "{stats}"
    );
}

#[tokio::test]
async fn the_alarms_sweep_is_counted() {
    const AGED: u64 = 10;
    let mut vars = LIMITS.to_vec();
    vars.extend([
        ("HISTORY_TTL_SECS", "1"),
        ("HEARTBEAT_MS", "1000"),
        ("IDLE_TIMEOUT_MS", "3000"),
    ]);
    let worker = Worker::start(&vars).await;
    let r = room("sweep-cost");
    let token = full_token("quiet");
    let mut client =
        Client::connect(&worker.ws_url(&format!("/v1/rooms/{r}/ws?token={token}"))).await;
    client.expect("welcome").await;
    publish_ws(&mut client, 0, AGED).await;
    let before = cost(&worker, &r).await;
    // The client falls silent: the alarm's sweep closes it (4008) and, its
    // messages being older than HISTORY_TTL_SECS by then, trims them. No
    // request writes anything meanwhile.
    assert_eq!(client.expect_close(Duration::from_secs(30)).await, 4008);
    // The sweep ends by setting the next alarm, for the room's retirement
    // (ROOM_RETIRE_MS, 7 days away): once that shows, it is done.
    let deadline = Instant::now() + Duration::from_secs(30);
    let swept = loop {
        let (now, stats) = cost_and_stats(&worker, &r).await;
        if stats["alarm"]
            .as_u64()
            .is_some_and(|at| at > now_ms() + 86_400_000)
        {
            break now - before;
        }
        assert!(
            Instant::now() < deadline,
            "the sweep never finished: {stats}"
        );
        sleep(Duration::from_millis(200)).await;
    };
    println!("one sweep that closes a client and trims {AGED} aged messages: {swept:?}");
    let (status, page) = Http::default()
        .get(
            &worker.url(&format!("/v1/rooms/{r}/messages")),
            Some(&bridge_token()),
        )
        .await;
    assert_eq!(
        (status, page["oldest"].clone()),
        (200, Value::Null),
        "the sweep trimmed every aged message: {page}"
    );
    // The deleted rows and the head it keeps in their place (its seq and
    // when it was stored), found by reading the oldest and the aged run.
    assert!(
        swept.rows_written >= (AGED + 2) as f64,
        "the sweep deleted {AGED} rows and wrote 2, counted {swept:?}"
    );
    assert!(
        swept.statements >= 5.0 && swept.rows_read >= AGED as f64,
        "the sweep's reads and deletes, counted {swept:?}"
    );
}
