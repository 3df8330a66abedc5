//! End to end, on one worker with default limits: admission (docs/protocol.md, "HTTP"),
//! every client frame and server answer of section 3, HTTP publish and
//! history, idempotency, resume, counters, trace context, the header that
//! marks roomcast's own errors, and each token algorithm of section 4.
//!
//! Each scenario is a test of its own, passing or failing by itself, and
//! all of them share one `wrangler dev` (each in its own room), because
//! starting workerd takes longer than most scenarios (`scenarios/mod.rs`
//! runs them, and says why not as `#[tokio::test]`s).

use std::process::ExitCode;
use std::time::Duration;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jwt_compact::alg::{Ed25519, Es256};
use jwt_compact::{AlgorithmExt, Header};
use roomcast_protocol::clock::now_ms;
use roomcast_protocol::signing::{mint_hs256, TokenSpec};
use roomcast_protocol::wire::ERROR_HEADER;
use roomcast_tests::{assert_error, full_token, room, token, Client, Http, Worker};
use serde_json::{json, Value};

const ED_SEED: [u8; 32] = [7; 32];
const P256_SECRET: [u8; 32] = [9; 32];
/// Two well-formed W3C traceparents.
const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const HEADER_TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// The JWKS holding the public halves of the fixed test keys.
fn jwks() -> String {
    let ed = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(ED_SEED));
    let p256 = p256::ecdsa::SigningKey::from_slice(&P256_SECRET).expect("a valid P-256 scalar");
    let point = p256.verifying_key().to_encoded_point(false);
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "x": b64(ed.pk.as_ref())},
        {"kty": "EC", "crv": "P-256", "kid": "ec-1", "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())},
    ]})
    .to_string()
}

fn spec(sub: &str) -> TokenSpec {
    TokenSpec {
        sub: sub.into(),
        rooms: vec!["*".into()],
        publish: vec!["*".into()],
        ttl_secs: 600,
        ..TokenSpec::default()
    }
}

fn eddsa_token(kid: &str) -> String {
    let key = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(ED_SEED)).sk;
    Ed25519
        .token(
            &Header::empty().with_key_id(kid),
            &spec("ed-user").claims(now_ms()),
            &key,
        )
        .unwrap()
}

/// A token signed by the JWKS's Ed25519 key (the key of whatever signs the
/// deployment's client tokens) that claims the bridge's role.
fn eddsa_bridge_token(kid: &str) -> String {
    let key = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(ED_SEED)).sk;
    let spec = TokenSpec {
        role: Some("bridge".into()),
        ..spec("not-the-bridge")
    };
    Ed25519
        .token(
            &Header::empty().with_key_id(kid),
            &spec.claims(now_ms()),
            &key,
        )
        .unwrap()
}

fn es256_token(kid: &str) -> String {
    let key = p256::ecdsa::SigningKey::from_slice(&P256_SECRET).unwrap();
    Es256
        .token(
            &Header::empty().with_key_id(kid),
            &spec("ec-user").claims(now_ms()),
            &key,
        )
        .unwrap()
}

#[macro_use]
mod scenarios;

fn main() -> ExitCode {
    scenarios::main(vec![group!(
        start;
        health,
        admission,
        token_sources,
        algorithms,
        publish_and_broadcast,
        bad_frames,
        refresh,
        policy_closes,
        http_publish_and_history,
        resume,
        stats,
        trace_context,
        error_header,
    )])
}

/// The worker every scenario runs on: the JWKS's keys for clients, and one
/// allowed origin.
async fn start() -> Worker {
    let keys = jwks();
    Worker::start(&[
        ("JWT_PUBLIC_KEYS", &keys),
        ("ALLOWED_ORIGINS", "https://app.example"),
    ])
    .await
}

async fn health(worker: &Worker) {
    let http = &Http::default();
    let (status, body) = http.get(&worker.url("/healthz"), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    let post = http
        .raw()
        .post(worker.url("/healthz"))
        .send()
        .await
        .expect("POST /healthz");
    assert_eq!(post.status().as_u16(), 405, "GET only");
}

async fn admission(worker: &Worker) {
    let http = &Http::default();
    let t = full_token("alice");
    let r = room("adm");
    assert_error(
        &http
            .get(&worker.url("/v1/rooms/.bad/messages"), Some(&t))
            .await,
        400,
        "bad_room",
    );
    assert_error(
        &http
            .get(
                &worker.url(&format!("/v1/rooms/{}/messages", "x".repeat(129))),
                Some(&t),
            )
            .await,
        400,
        "bad_room",
    );
    assert_error(
        &http
            .get(&worker.url(&format!("/v1/rooms/{r}/messages")), None)
            .await,
        401,
        "unauthorized",
    );
    assert_error(
        &http
            .get(
                &worker.url(&format!("/v1/rooms/{r}/messages")),
                Some("not.a.jwt"),
            )
            .await,
        401,
        "unauthorized",
    );
    let expired = token("alice", &["*"], &["*"], 0);
    // exp == now is still inside the 30 s leeway; one minute ago is not.
    let stale = mint_hs256(roomcast_tests::SECRET, &spec("alice"), now_ms() - 700_000);
    assert_eq!(
        http.get(
            &worker.url(&format!("/v1/rooms/{r}/messages")),
            Some(&expired)
        )
        .await
        .0,
        200
    );
    assert_error(
        &http
            .get(
                &worker.url(&format!("/v1/rooms/{r}/messages")),
                Some(&stale),
            )
            .await,
        401,
        "unauthorized",
    );
    let patterns: Vec<String> = (0..2000).map(|n| format!("room-{n}")).collect();
    let huge = token(
        "greedy",
        &patterns.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
        600,
    );
    assert_error(
        &http
            .get(&worker.url("/v1/rooms/room-1/messages"), Some(&huge))
            .await,
        401,
        "unauthorized",
    );
    let reader = token("reader", &["adm.*"], &[], 600);
    assert_error(
        &http
            .get(&worker.url("/v1/rooms/other/messages"), Some(&reader))
            .await,
        403,
        "forbidden",
    );
    assert_error(
        &http
            .post(
                &worker.url(&format!("/v1/rooms/{r}/messages")),
                &reader,
                r#"{"data":1}"#,
            )
            .await,
        403,
        "forbidden",
    );
    assert_error(
        &http
            .get(&worker.url(&format!("/v1/rooms/{r}/ws")), Some(&t))
            .await,
        426,
        "upgrade_required",
    );
    assert_error(
        &http.get(&worker.url("/v1/nothing"), Some(&t)).await,
        404,
        "not_found",
    );
    let put = http
        .raw()
        .put(worker.url(&format!("/v1/rooms/{r}/stats")))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 405);
    let ws_url = worker.ws_url(&format!("/v1/rooms/{r}/ws?token={t}"));
    assert_eq!(
        Client::refused_with(&ws_url, &[("origin", "https://evil.example")]).await,
        403
    );
    assert_error(
        &http_with_origin(
            http,
            &worker.url(&format!("/v1/rooms/{r}/messages")),
            &t,
            "https://evil.example",
        )
        .await,
        403,
        "bad_origin",
    );
    let good_origin = Client::connect_with(
        &worker.ws_url(&format!("/v1/rooms/{r}/ws?token={t}")),
        &[("origin", "https://app.example")],
    )
    .await;
    good_origin
        .expect("an allowed origin connects")
        .expect("welcome")
        .await;
    assert_eq!(
        Client::refused(&worker.ws_url(&format!("/v1/rooms/{r}/ws"))).await,
        401
    );
}

async fn http_with_origin(http: &Http, url: &str, token: &str, origin: &str) -> (u16, Value) {
    let response = http
        .raw()
        .get(url)
        .bearer_auth(token)
        .header("origin", origin)
        .send()
        .await
        .expect("GET");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON error body"))
}

async fn token_sources(worker: &Worker) {
    let t = full_token("alice");
    let r = room("src");
    let url = worker.ws_url(&format!("/v1/rooms/{r}/ws"));
    let mut by_header = Client::connect_with(&url, &[("authorization", &format!("Bearer {t}"))])
        .await
        .unwrap();
    assert_eq!(by_header.expect("welcome").await["room"], r.as_str());
    let offer = format!("roomcast.v1, bearer.{t}");
    let mut by_protocol = Client::connect_with(&url, &[("sec-websocket-protocol", &offer)])
        .await
        .unwrap();
    assert_eq!(by_protocol.protocol.as_deref(), Some("roomcast.v1"));
    by_protocol.expect("welcome").await;
    // A token offered as the only subprotocol would have to be echoed back
    // in the answer: refused instead.
    let lone = format!("bearer.{t}");
    assert_eq!(
        Client::refused_with(&url, &[("sec-websocket-protocol", &lone)]).await,
        400
    );
    let mut by_query = Client::connect(&format!("{url}?token={t}")).await;
    let welcome = by_query.expect("welcome").await;
    for field in ["conn_id", "epoch"] {
        assert!(
            welcome[field].as_str().is_some_and(|v| !v.is_empty()),
            "{field} in {welcome}"
        );
    }
    assert_eq!(welcome["head"], 0);
    assert_eq!(welcome["recovered"], false);
    assert_eq!(welcome["heartbeat_ms"], 30000);
    assert_eq!(welcome["max_message_bytes"], 65536);
    assert_eq!(welcome["rate"], json!({"per_sec": 20, "burst": 40}));
    assert!(welcome["exp"].as_u64().unwrap() > now_ms() / 1000);
}

async fn algorithms(worker: &Worker) {
    let http = &Http::default();
    let r = room("alg");
    let url = worker.url(&format!("/v1/rooms/{r}/messages"));
    let (status, body) = http
        .post(&url, &eddsa_token("ed-1"), r#"{"data":"ed"}"#)
        .await;
    assert_eq!(status, 201, "EdDSA: {body}");
    let (status, body) = http
        .post(&url, &es256_token("ec-1"), r#"{"data":"ec"}"#)
        .await;
    assert_eq!(status, 201, "ES256: {body}");
    assert_error(
        &http.post(&url, &eddsa_token("nope"), r#"{"data":1}"#).await,
        401,
        "unauthorized",
    );
    assert_error(
        &http.post(&url, &eddsa_token("ec-1"), r#"{"data":1}"#).await,
        401,
        "unauthorized",
    );
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(r#"{"sub":"x","exp":9999999999,"rooms":["*"],"publish":["*"]}"#)
    );
    assert_error(
        &http.post(&url, &none, r#"{"data":1}"#).await,
        401,
        "unauthorized",
    );
    // The bridge's role comes only from the keys configured for it (none
    // here: only the HS256 secret), never from a key that signs clients.
    let impostor = eddsa_bridge_token("ed-1");
    let link = worker.ws_url(&format!("/v1/rooms/{r}/bridge?instance=x&token={impostor}"));
    assert_eq!(Client::refused(&link).await, 401);
    assert_error(
        &http.get(&worker.url("/v1/registry"), Some(&impostor)).await,
        401,
        "unauthorized",
    );
    let (_, history) = http.get(&url, Some(&es256_token("ec-1"))).await;
    let senders: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["sender"].as_str().unwrap())
        .collect();
    assert_eq!(senders, ["ed-user", "ec-user"]);
}

fn is_uuid_v7(id: &str) -> bool {
    id.len() == 36 && id.as_bytes()[14] == b'7' && id.chars().filter(|c| *c == '-').count() == 4
}

async fn publish_and_broadcast(worker: &Worker) {
    let r = room("pub");
    let mut alice =
        Client::connect(&worker.ws_url(&format!("/v1/rooms/{r}/ws?token={}", full_token("alice"))))
            .await;
    let mut bob =
        Client::connect(&worker.ws_url(&format!("/v1/rooms/{r}/ws?token={}", full_token("bob"))))
            .await;
    alice.expect("welcome").await;
    bob.expect("welcome").await;

    alice
        .send_json(json!({"type": "publish", "data": {"text": "hi"}, "ref": "r1"}))
        .await;
    let mine = alice.expect("message").await;
    let ack = alice.expect("ack").await;
    let theirs = bob.expect("message").await;
    assert_eq!(mine, theirs);
    assert_eq!(
        (
            mine["room"].as_str(),
            mine["seq"].as_u64(),
            mine["sender"].as_str(),
            mine["origin"].as_str()
        ),
        (Some(r.as_str()), Some(1), Some("alice"), Some("ws"))
    );
    assert_eq!(mine["data"], json!({"text": "hi"}));
    assert!(is_uuid_v7(mine["id"].as_str().unwrap()), "{mine}");
    assert!(mine["ts"].as_u64().unwrap().abs_diff(now_ms()) < 60_000);
    assert_eq!(
        ack,
        json!({"type": "ack", "ref": "r1", "id": mine["id"], "seq": 1, "duplicate": false})
    );

    bob.send_json(json!({"type": "publish", "data": [1, 2], "id": "key-1"}))
        .await;
    assert_eq!(bob.expect("message").await["id"], "key-1");
    assert_eq!(bob.expect("ack").await["seq"], 2);
    assert_eq!(alice.expect("message").await["seq"], 2);
    // The same idempotency key again: acked as a duplicate, never broadcast twice.
    bob.send_json(json!({"type": "publish", "data": [1, 2], "id": "key-1", "ref": "again"}))
        .await;
    let dup = bob.expect("ack").await;
    assert_eq!(
        dup,
        json!({"type": "ack", "ref": "again", "id": "key-1", "seq": 2, "duplicate": true})
    );
    alice.send_json(json!({"type": "publish", "data": 3})).await;
    assert_eq!(
        alice.expect("message").await["seq"],
        3,
        "no duplicate frame may come before seq 3"
    );
    alice.expect("ack").await;
    assert_eq!(bob.expect("message").await["seq"], 3);

    alice.send_text("ping").await;
    assert_eq!(alice.next_text().await, "pong");
}

async fn bad_frames(worker: &Worker) {
    let r = room("bad");
    let reader = token("reader", &["*"], &[], 600);
    let mut c =
        Client::connect(&worker.ws_url(&format!("/v1/rooms/{r}/ws?token={}", full_token("carol"))))
            .await;
    let mut ro = Client::connect(&worker.ws_url(&format!("/v1/rooms/{r}/ws?token={reader}"))).await;
    c.expect("welcome").await;
    ro.expect("welcome").await;
    let mut deep = json!(1);
    for _ in 0..33 {
        deep = json!([deep]);
    }
    let cases = [
        ("not json".to_string(), "bad_format", None),
        (json!({"data": 1}).to_string(), "bad_format", None),
        (json!({"type": 5}).to_string(), "bad_format", None),
        (
            json!({"type": "shout", "ref": "u"}).to_string(),
            "bad_format",
            Some("u"),
        ),
        (
            json!({"type": "publish", "ref": "nodata"}).to_string(),
            "bad_format",
            Some("nodata"),
        ),
        (
            json!({"type": "publish", "data": 1, "id": 7, "ref": "badid"}).to_string(),
            "bad_format",
            Some("badid"),
        ),
        (
            json!({"type": "publish", "data": deep, "ref": "deep"}).to_string(),
            "bad_format",
            Some("deep"),
        ),
        (
            json!({"type": "publish", "data": "x".repeat(70_000), "ref": "big"}).to_string(),
            "too_large",
            Some("big"),
        ),
        (
            json!({"type": "auth", "token": "garbage"}).to_string(),
            "bad_token",
            None,
        ),
    ];
    for (frame, code, reference) in cases {
        c.send_text(&frame).await;
        let error = c.expect("error").await;
        assert_eq!(error["code"], code, "for {}", &frame[..frame.len().min(80)]);
        assert_eq!(error["ref"].as_str(), reference, "{error}");
    }
    ro.send_json(json!({"type": "publish", "data": 1, "ref": "ro"}))
        .await;
    assert_eq!(
        ro.expect("error").await,
        json!({"type": "error", "code": "forbidden", "message": "this token may not publish to this room", "ref": "ro"})
    );
    // The connection survived every rejection.
    c.send_json(json!({"type": "publish", "data": "still here"}))
        .await;
    assert_eq!(c.expect("message").await["seq"], 1);
    assert_eq!(ro.expect("message").await["seq"], 1);
}

async fn refresh(worker: &Worker) {
    let r = room("auth");
    let mut c = Client::connect(&worker.ws_url(&format!(
        "/v1/rooms/{r}/ws?token={}",
        token("dave", &["*"], &["*"], 600)
    )))
    .await;
    let exp = c.expect("welcome").await["exp"].as_u64().unwrap();
    c.send_json(json!({"type": "auth", "token": token("dave", &["*"], &["*"], 7200)}))
        .await;
    let ok = c.expect("auth_ok").await;
    assert!(ok["exp"].as_u64().unwrap() > exp + 6000, "{ok}");
    c.send_json(json!({"type": "auth", "token": full_token("mallory")}))
        .await;
    assert_eq!(c.expect("error").await["code"], "bad_token");
    // An identity too big for a connection's state is refused here as at
    // the door.
    let mut patterns: Vec<String> = (0..500).map(|n| format!("room-pattern-{n:04}.*")).collect();
    patterns.push("*".into());
    let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
    c.send_json(json!({"type": "auth", "token": token("dave", &patterns, &["*"], 600)}))
        .await;
    let refused = c.expect("error").await;
    assert_eq!(refused["code"], "bad_token", "{refused}");
    // A valid token for the same subject that no longer grants this room.
    c.send_json(json!({"type": "auth", "token": token("dave", &["elsewhere"], &[], 600)}))
        .await;
    assert_eq!(c.expect_close(Duration::from_secs(10)).await, 4003);
}

async fn policy_closes(worker: &Worker) {
    let r = room("policy");
    let url = worker.ws_url(&format!("/v1/rooms/{r}/ws?token={}", full_token("erin")));
    let mut huge = Client::connect(&url).await;
    huge.expect("welcome").await;
    huge.send_json(json!({"type": "publish", "data": "x".repeat(65_536 * 4 + 1)}))
        .await;
    assert_eq!(huge.expect("error").await["code"], "too_large");
    assert_eq!(huge.expect_close(Duration::from_secs(10)).await, 1009);

    let mut sloppy = Client::connect(&url).await;
    sloppy.expect("welcome").await;
    for _ in 0..19 {
        sloppy.send_text("{").await;
    }
    sloppy
        .send_json(json!({"type": "publish", "data": "a good frame resets the count"}))
        .await;
    for _ in 0..19 {
        sloppy.send_text("{").await;
    }
    for _ in 0..19 {
        assert_eq!(sloppy.expect("error").await["code"], "bad_format");
    }
    sloppy.expect("message").await;
    sloppy.expect("ack").await;
    for _ in 0..19 {
        assert_eq!(sloppy.expect("error").await["code"], "bad_format");
    }
    sloppy.send_text("{").await;
    assert_eq!(sloppy.expect("error").await["code"], "bad_format");
    assert_eq!(sloppy.expect_close(Duration::from_secs(10)).await, 1008);

    // A fresh token forgives nothing: alternating bad frames with `auth`
    // still reaches the close.
    let mut sly = Client::connect(&url).await;
    sly.expect("welcome").await;
    for _ in 0..19 {
        sly.send_text("{").await;
    }
    sly.send_json(json!({"type": "auth", "token": full_token("erin")}))
        .await;
    sly.send_text("{").await;
    for _ in 0..19 {
        assert_eq!(sly.expect("error").await["code"], "bad_format");
    }
    sly.expect("auth_ok").await;
    assert_eq!(sly.expect("error").await["code"], "bad_format");
    assert_eq!(sly.expect_close(Duration::from_secs(10)).await, 1008);
}

async fn http_publish_and_history(worker: &Worker) {
    let http = &Http::default();
    let r = room("http");
    let t = full_token("frank");
    let url = worker.url(&format!("/v1/rooms/{r}/messages"));
    let mut listener =
        Client::connect(&worker.ws_url(&format!("/v1/rooms/{r}/ws?token={t}"))).await;
    listener.expect("welcome").await;

    let (status, one) = http.post(&url, &t, r#"{"data":{"n":1}}"#).await;
    assert_eq!(status, 201, "{one}");
    assert_eq!(
        (one["seq"].as_u64(), one["duplicate"].as_bool()),
        (Some(1), Some(false))
    );
    assert!(is_uuid_v7(one["id"].as_str().unwrap()));
    let pushed = listener.expect("message").await;
    assert_eq!(
        (
            pushed["origin"].as_str(),
            pushed["sender"].as_str(),
            pushed["id"].clone()
        ),
        (Some("http"), Some("frank"), one["id"].clone())
    );

    let batch =
        json!({"messages": [{"data": 2, "id": "b-1"}, {"data": 3}, {"data": 2, "id": "b-1"}]})
            .to_string();
    let (status, results) = http.post(&url, &t, &batch).await;
    assert_eq!(status, 201, "{results}");
    let seqs: Vec<(u64, bool)> = results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["seq"].as_u64().unwrap(),
                r["duplicate"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(seqs, [(2, false), (3, false), (2, true)]);
    assert_eq!(listener.expect("message").await["seq"], 2);
    assert_eq!(listener.expect("message").await["seq"], 3);
    // A message published after the batch is the next frame: the batch's
    // duplicate was not broadcast.
    let (status, sentinel) = http.post(&url, &t, r#"{"data":"sentinel"}"#).await;
    assert_eq!(status, 201, "{sentinel}");
    let next = listener.expect("message").await;
    assert_eq!(
        (next["seq"].as_u64(), next["data"].as_str()),
        (Some(4), Some("sentinel")),
        "a duplicate was broadcast: {next}"
    );

    for (body, code) in [
        ("nope", "bad_format"),
        (r#"{"messages":[]}"#, "bad_format"),
        (r#"{"messages":[{"data":1},{}]}"#, "bad_format"),
    ] {
        assert_error(&http.post(&url, &t, body).await, 400, code);
    }
    let too_many = json!({"messages": vec![json!({"data": 1}); 501]}).to_string();
    assert_error(&http.post(&url, &t, &too_many).await, 400, "bad_format");

    let (status, page) = http.get(&format!("{url}?since=1&limit=1"), Some(&t)).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            page["room"].as_str(),
            page["head"].as_u64(),
            page["truncated"].as_bool()
        ),
        (Some(r.as_str()), Some(4), Some(true))
    );
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
    assert_eq!(page["messages"][0]["seq"], 2);
    assert!(page["messages"][0].get("type").is_none());
    let (_, rest) = http.get(&format!("{url}?since=2"), Some(&t)).await;
    let rest_seqs: Vec<u64> = rest["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        (rest["truncated"].as_bool(), rest_seqs.as_slice()),
        (Some(false), &[3, 4][..])
    );
    assert_error(
        &http.get(&format!("{url}?since=-1"), Some(&t)).await,
        400,
        "bad_request",
    );
}

async fn resume(worker: &Worker) {
    let http = &Http::default();
    let r = room("resume");
    let t = full_token("gina");
    let base = worker.ws_url(&format!("/v1/rooms/{r}/ws?token={t}"));
    let mut first = Client::connect(&base).await;
    let epoch = first.expect("welcome").await["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    for n in 1..=5 {
        first.send_json(json!({"type": "publish", "data": n})).await;
        first.expect("message").await;
        first.expect("ack").await;
    }
    let mut back = Client::connect(&format!("{base}&since=2&epoch={epoch}")).await;
    let welcome = back.expect("welcome").await;
    assert_eq!(
        (welcome["recovered"].as_bool(), welcome["head"].as_u64()),
        (Some(true), Some(5))
    );
    // A live message published now must come after the whole replay.
    first.send_json(json!({"type": "publish", "data": 6})).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(back.expect("message").await["seq"].as_u64().unwrap());
    }
    assert_eq!(got, [3, 4, 5, 6]);
    // The next live message is the next frame: nothing came twice.
    first
        .send_json(json!({"type": "publish", "data": "sentinel"}))
        .await;
    assert_eq!(back.expect("message").await["seq"], 7, "no message twice");

    for query in [
        "since=2&epoch=e_other".to_string(),
        "since=2".to_string(),
        format!("since=99&epoch={epoch}"),
    ] {
        let mut c = Client::connect(&format!("{base}&{query}")).await;
        let welcome = c.expect("welcome").await;
        assert_eq!(welcome["recovered"], false, "{query}");
        // The first message after the welcome is one published after the
        // join: nothing was replayed.
        first
            .send_json(json!({"type": "publish", "data": "sentinel"}))
            .await;
        let next = c.expect("message").await;
        assert_eq!(
            (next["seq"].as_u64(), next["data"].as_str()),
            (welcome["head"].as_u64().map(|h| h + 1), Some("sentinel")),
            "no replay for {query}: {next}"
        );
    }
    let (_, page) = http
        .get(&worker.url(&format!("/v1/rooms/{r}/messages")), Some(&t))
        .await;
    assert_eq!(page["epoch"], epoch.as_str());
}

async fn stats(worker: &Worker) {
    let http = &Http::default();
    let r = room("stats");
    let t = full_token("hank");
    let mut a = Client::connect(&worker.ws_url(&format!("/v1/rooms/{r}/ws?token={t}"))).await;
    let epoch = a.expect("welcome").await["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut b = Client::connect(
        &worker.ws_url(&format!("/v1/rooms/{r}/ws?token={t}&since=0&epoch={epoch}")),
    )
    .await;
    b.expect("welcome").await;
    a.send_json(json!({"type": "publish", "data": 1})).await;
    a.expect("message").await;
    a.expect("ack").await;
    b.expect("message").await;
    a.send_text("{").await;
    a.expect("error").await;
    http.post(
        &worker.url(&format!("/v1/rooms/{r}/messages")),
        &t,
        r#"{"data":2}"#,
    )
    .await;
    a.expect("message").await;
    b.expect("message").await;
    b.close().await;
    let (status, s) = http
        .get(&worker.url(&format!("/v1/rooms/{r}/stats")), Some(&t))
        .await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["room"], r.as_str());
    assert_eq!(s["epoch"], epoch.as_str());
    assert_eq!(s["head"], 2);
    assert_eq!(s["messages_total"], json!({"ws": 1, "http": 1, "kafka": 0}));
    assert_eq!(s["deliveries_total"], 4);
    assert_eq!(
        s["rejects_total"],
        json!({"bad_format": 1, "too_large": 0, "rate_limited": 0, "forbidden": 0, "bad_token": 0, "id_conflict": 0, "too_many_connections": 0})
    );
    assert_eq!(s["reconnects_total"], 1);
    assert!(s["connections"].as_u64().unwrap() >= 1);
    let closed: Value = s["connection_seconds"]["count"].clone();
    assert!(closed.as_u64().unwrap() <= 1, "{s}");
}

/// A publisher's `traceparent` is stored with its message and comes back
/// wherever the message does: live, in a replay and in the history.
async fn trace_context(worker: &Worker) {
    let http = &Http::default();
    let r = room("trace");
    let t = full_token("tina");
    let ws = worker.ws_url(&format!("/v1/rooms/{r}/ws?token={t}"));
    let url = worker.url(&format!("/v1/rooms/{r}/messages"));
    let mut publisher = Client::connect(&ws).await;
    let mut listener = Client::connect(&ws).await;
    let epoch = publisher.expect("welcome").await["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    listener.expect("welcome").await;

    publisher
        .send_json(json!({"type": "publish", "data": 1, "trace": TRACE}))
        .await;
    assert_eq!(listener.expect("message").await["trace"], TRACE);
    assert_eq!(publisher.expect("message").await["trace"], TRACE);
    publisher.expect("ack").await;
    publisher
        .send_json(json!({"type": "publish", "data": 0, "trace": "00-nope", "ref": "t"}))
        .await;
    let error = publisher.expect("error").await;
    assert_eq!(
        (error["code"].as_str(), error["ref"].as_str()),
        (Some("bad_format"), Some("t"))
    );

    // Over HTTP the `traceparent` header fills in for messages without a
    // trace of their own, and a malformed header is ignored.
    let post = |traceparent: &str, body: Value| {
        http.raw()
            .post(&url)
            .bearer_auth(&t)
            .header("traceparent", traceparent)
            .body(body.to_string())
            .send()
    };
    let batch = json!({"messages": [{"data": 2}, {"data": 3, "trace": TRACE}]});
    assert_eq!(post(HEADER_TRACE, batch).await.unwrap().status(), 201);
    assert_eq!(
        post("not-a-trace", json!({"data": 4}))
            .await
            .unwrap()
            .status(),
        201
    );
    let refused = post(HEADER_TRACE, json!({"data": 5, "trace": "not-a-trace"}))
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(refused.headers()[ERROR_HEADER], "bad_format");
    let live: Vec<Value> = vec![
        listener.expect("message").await,
        listener.expect("message").await,
        listener.expect("message").await,
    ];
    assert_eq!(
        live.iter().map(|m| m["trace"].clone()).collect::<Vec<_>>(),
        [json!(HEADER_TRACE), json!(TRACE), Value::Null]
    );
    assert!(
        live[2].get("trace").is_none(),
        "no trace, no field: {}",
        live[2]
    );

    let expected = [json!(TRACE), json!(HEADER_TRACE), json!(TRACE), Value::Null];
    let (status, page) = http.get(&format!("{url}?since=0"), Some(&t)).await;
    assert_eq!(status, 200, "{page}");
    let stored: Vec<Value> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["trace"].clone())
        .collect();
    assert_eq!(stored, expected);
    let mut resumed = Client::connect(&format!("{ws}&since=0&epoch={epoch}")).await;
    assert_eq!(resumed.expect("welcome").await["recovered"], true);
    let mut replayed = Vec::new();
    for _ in 0..expected.len() {
        replayed.push(resumed.expect("message").await["trace"].clone());
    }
    assert_eq!(replayed, expected);
}

/// Every error roomcast answers, from the router or from a room, names its
/// code in a header too, so a caller can tell it from a proxy's 4xx.
async fn error_header(worker: &Worker) {
    let http = &Http::default();
    let ivy = full_token("ivy");
    let t = ivy.as_str();
    let messages = worker.url(&format!("/v1/rooms/{}/messages", room("hdr")));
    let cases = [
        (worker.url("/v1/nothing"), Some(t), "not_found"),
        (worker.url("/v1/rooms/.bad/messages"), Some(t), "bad_room"),
        (messages.clone(), None, "unauthorized"),
        (format!("{messages}?since=-1"), Some(t), "bad_request"),
    ];
    for (url, bearer, code) in cases {
        let mut request = http.raw().get(&url);
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.headers()[ERROR_HEADER], code, "{url}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{url}");
    }
    let ok = http
        .raw()
        .get(&messages)
        .bearer_auth(t)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.headers().get(ERROR_HEADER).is_none());
}
