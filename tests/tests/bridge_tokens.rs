//! End to end, the bridge's credentials in production: short-lived tokens
//! minted from a private key whose public half is all the worker holds,
//! with the issuer and audience the worker checks, replaced over the open
//! links before they expire, so over several lifetimes no link reconnects
//! and nothing is lost or doubled; and a token issued elsewhere, followed
//! through its file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rdkafka::message::Message as _;
use roomcast_protocol::clock::now_ms;
use roomcast_protocol::signing::{mint_hs256, TokenSpec};
use roomcast_tests::records::{collect, header, produce};
use roomcast_tests::{
    bridge_binary, fresh_dir, metric, room, BridgeProcess, Broker, Client, Http, Worker, SECRET,
};
use serde_json::json;
use tokio::time::{sleep, Instant};

const TTL_SECS: u64 = 20;
const ISSUER: &str = "https://auth.roomcast.test";
const AUDIENCE: &str = "roomcast-e2e";
const KID: &str = "bridge-e2e";

/// A fresh Ed25519 private key in PEM, as `openssl genpkey` writes it.
fn key_file() -> PathBuf {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).expect("randomness");
    let pair = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed));
    let path = fresh_dir("bridge-key").join("key.pem");
    std::fs::write(&path, pair.sk.to_pem()).expect("write the key");
    path
}

/// The worker's JWKS, as the bridge prints it for its key.
fn jwks(key: &Path) -> String {
    let out = Command::new(bridge_binary())
        .arg("--jwt-key-file")
        .arg(key)
        .args(["--jwt-kid", KID, "jwks"])
        .output()
        .expect("run roomcast-bridge jwks");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned()
}

/// A user token with the issuer and audience the worker checks.
fn user_token(sub: &str) -> String {
    let spec = TokenSpec {
        sub: sub.into(),
        rooms: vec!["*".into()],
        publish: vec!["*".into()],
        iss: Some(ISSUER.into()),
        aud: Some(AUDIENCE.into()),
        ttl_secs: 3600,
        ..TokenSpec::default()
    };
    mint_hs256(SECRET, &spec, now_ms())
}

#[tokio::test]
async fn short_tokens_are_replaced_over_open_links() {
    let key = key_file();
    let keys = jwks(&key);
    let worker = Worker::start(&[
        ("JWT_PUBLIC_KEYS", &keys),
        // The bridge's key is the one key that may mint its role.
        ("JWT_BRIDGE_KIDS", KID),
        ("JWT_ISSUER", ISSUER),
        ("JWT_AUDIENCE", AUDIENCE),
        // No slack: a link still on an expired token is closed (4001)
        // half a second after its `exp`.
        ("JWT_LEEWAY_SECS", "0"),
        ("TOKEN_GRACE_MS", "500"),
    ])
    .await;
    let broker = Broker::start().await;
    let key_arg = key.display().to_string();
    let ttl = format!("{TTL_SECS}s");
    let bridge = BridgeProcess::start(
        &worker,
        &broker,
        "tokens",
        &[
            "--jwt-key-file",
            &key_arg,
            "--jwt-kid",
            KID,
            "--jwt-issuer",
            ISSUER,
            "--jwt-audience",
            AUDIENCE,
            "--token-ttl",
            &ttl,
        ],
    )
    .await;
    let out = room("tokens-out");
    let inbound = room("tokens-in");
    let events = broker.consumer("roomcast.events");
    let kafka = broker.producer();
    let user = user_token("tokens");
    let mut client =
        Client::connect(&worker.ws_url(&format!("/v1/rooms/{out}/ws?token={user}"))).await;
    client.expect("welcome").await;

    // Traffic both ways for three and a quarter token lifetimes, paced at
    // four messages a second each way.
    let until = Instant::now() + Duration::from_millis(TTL_SECS * 1000 * 13 / 4);
    let mut sent = 0u64;
    while Instant::now() < until {
        client
            .send_json(json!({"type": "publish", "data": {"n": sent}, "id": format!("ws-{sent}")}))
            .await;
        produce(
            &kafka,
            "roomcast.inbound",
            &inbound,
            &json!({"n": sent}).to_string(),
            &[("message-id", &format!("kafka-{sent}"))],
        )
        .await;
        sent += 1;
        sleep(Duration::from_millis(250)).await;
    }

    // Every WebSocket message reached Kafka exactly once: everything of
    // the room before a message published after them all is each of them,
    // once, in order.
    client
        .send_json(json!({"type": "publish", "data": "sentinel", "id": "ws-sentinel"}))
        .await;
    let records = collect(&events, Duration::from_secs(60), |got| {
        got.last().is_some_and(|r| {
            r.key() == Some(out.as_bytes())
                && header(r, "message-id").as_deref() == Some("ws-sentinel")
        })
    })
    .await;
    let relayed: Vec<(u64, String)> = records
        .iter()
        .filter(|r| r.key() == Some(out.as_bytes()))
        .map(|r| {
            let seq = header(r, "seq")
                .and_then(|s| s.parse().ok())
                .expect("a seq header");
            (seq, header(r, "message-id").expect("a message-id header"))
        })
        .collect();
    let expected: Vec<(u64, String)> = (0..sent)
        .map(|n| (n + 1, format!("ws-{n}")))
        .chain([(sent + 1, "ws-sentinel".to_owned())])
        .collect();
    assert_eq!(relayed, expected, "each message once, in order");

    // Every Kafka record reached its room exactly once: a resume from the
    // room's start gets each of them, once, in order, and then a record
    // produced after them all.
    produce(
        &kafka,
        "roomcast.inbound",
        &inbound,
        r#""sentinel""#,
        &[("message-id", "kafka-sentinel")],
    )
    .await;
    // The Kafka records created the inbound room: its epoch is the one
    // its first record was stored under, unless its storage was lost since
    // (then the resume below misses the records before the loss).
    let (status, page) = Http::default()
        .get(
            &worker.url(&format!("/v1/rooms/{inbound}/messages?limit=1")),
            Some(&user),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let epoch = page["epoch"].as_str().expect("epoch");
    let inbound_ws = worker.ws_url(&format!("/v1/rooms/{inbound}/ws?token={user}"));
    let mut reader = Client::connect(&format!("{inbound_ws}&since=0&epoch={epoch}")).await;
    assert_eq!(reader.expect("welcome").await["recovered"], true);
    let mut ids = Vec::new();
    while ids.last().is_none_or(|id| id != "kafka-sentinel") {
        let Some(text) = reader.next_text_within(Duration::from_secs(60)).await else {
            panic!("only {} records reached the room", ids.len())
        };
        let message: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(message["type"], "message", "{message}");
        ids.push(message["id"].as_str().expect("id").to_owned());
    }
    let expected: Vec<String> = (0..sent)
        .map(|n| format!("kafka-{n}"))
        .chain(["kafka-sentinel".to_owned()])
        .collect();
    assert_eq!(ids, expected, "each record once, in order");

    // No link reconnected, for auth or any other reason, and the bridge
    // really did change tokens under the open links.
    let text = bridge.metrics_text().await;
    assert_eq!(
        metric(
            &text,
            &format!("roomcast_bridge_link_reconnects_total{{room=\"{out}\"}}")
        ),
        Some(0.0),
        "{text}"
    );
    let log = bridge.service.log();
    assert!(
        log.matches("minted a fresh token").count() >= 3,
        "{}",
        bridge.service.log_tail()
    );
    // A close is logged as "the worker closed the link (Some(4001): …)";
    // the bare number would also match a log timestamp's microseconds.
    for lost in ["room link lost", "registry link:", "(Some(4001)"] {
        let found: Vec<&str> = log.lines().filter(|l| l.contains(lost)).collect();
        assert!(
            found.is_empty(),
            "{lost:?} in the bridge's log:\n{found:#?}"
        );
    }
}

#[tokio::test]
async fn a_token_file_is_followed() {
    let worker = Worker::start(&[("JWT_LEEWAY_SECS", "0"), ("TOKEN_GRACE_MS", "500")]).await;
    let broker = Broker::start().await;
    let path = fresh_dir("token-file").join("bridge.jwt");
    let bridge_token = |ttl_secs| {
        let spec = TokenSpec {
            sub: "external-issuer-bridge".into(),
            role: Some("bridge".into()),
            ttl_secs,
            ..TokenSpec::default()
        };
        mint_hs256(SECRET, &spec, now_ms())
    };
    const FIRST_TTL: u64 = 8;
    std::fs::write(&path, bridge_token(FIRST_TTL)).unwrap();
    let first_expires = Instant::now() + Duration::from_secs(FIRST_TTL);
    let path_arg = path.display().to_string();
    let bridge =
        BridgeProcess::start(&worker, &broker, "token-file", &["--token-file", &path_arg]).await;
    let r = room("token-file");
    let events = broker.consumer("roomcast.events");
    let http = Http::default();
    let user = roomcast_tests::full_token("user");
    let publish = |n: u64| {
        let url = worker.url(&format!("/v1/rooms/{r}/messages"));
        let http = &http;
        let user = &user;
        async move {
            let (status, body) = http.post(&url, user, &json!({"data": n}).to_string()).await;
            assert_eq!(status, 201, "{body}");
        }
    };
    let seqs_until = |seq: &'static str| {
        let events = &events;
        async move {
            let records = collect(events, Duration::from_secs(30), |got| {
                got.last()
                    .is_some_and(|r| header(r, "seq").as_deref() == Some(seq))
            })
            .await;
            records
                .iter()
                .map(|r| header(r, "seq").expect("a seq header"))
                .collect::<Vec<_>>()
        }
    };
    publish(1).await;
    assert_eq!(seqs_until("1").await, ["1"]);

    // The issuer rotates the file; the first token then expires (a wait
    // for the clock, not for an event). What the link relays next is each
    // message once, up to one published after them.
    std::fs::write(&path, bridge_token(3600)).unwrap();
    tokio::time::sleep_until(first_expires + Duration::from_secs(2)).await;
    publish(2).await;
    publish(3).await;
    assert_eq!(seqs_until("3").await, ["2", "3"]);
    let text = bridge.metrics_text().await;
    assert_eq!(
        metric(
            &text,
            &format!("roomcast_bridge_link_reconnects_total{{room=\"{r}\"}}")
        ),
        Some(0.0),
        "the link outlived the first token without reconnecting:\n{}",
        bridge.service.log_tail()
    );
    assert!(bridge
        .service
        .log()
        .contains("read a new token from the file"));
}
