#![cfg(target_arch = "wasm32")]
//! The protocol crate's wasm-only paths, run under `wasm-bindgen-test-runner`
//! (Node): signature checks of every JWT algorithm compiled to wasm, id
//! generation through `crypto.getRandomValues`, and the JavaScript clock.
//! Native tests cannot reach these code paths.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jwt_compact::alg::{Ed25519, Es256};
use jwt_compact::{AlgorithmExt, Header};
use roomcast_protocol::auth::{Verifier, VerifierConfig};
use roomcast_protocol::signing::{mint_hs256, TokenSpec};
use roomcast_protocol::{clock, ids};
use wasm_bindgen_test::wasm_bindgen_test;

fn spec() -> TokenSpec {
    TokenSpec {
        sub: "wasm".into(),
        rooms: vec!["*".into()],
        ttl_secs: 60,
        ..TokenSpec::default()
    }
}

fn verifier() -> Verifier {
    let ed = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([7; 32]));
    let ec = p256::ecdsa::SigningKey::from_slice(&[9; 32]).unwrap();
    let point = ec.verifying_key().to_encoded_point(false);
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let jwks = serde_json::json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64(ed.pk.as_ref())},
        {"kty": "EC", "crv": "P-256", "kid": "ec", "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())},
    ]});
    Verifier::new(&VerifierConfig {
        hs256_secret: Some("s".into()),
        jwks: Some(jwks.to_string()),
        leeway_secs: 0,
        ..VerifierConfig::default()
    })
    .unwrap()
}

#[wasm_bindgen_test]
fn hs256_on_wasm() {
    let now = clock::now_ms();
    let token = mint_hs256("s", &spec(), now);
    assert_eq!(verifier().verify(&token, now).unwrap().sub, "wasm");
    assert!(verifier()
        .verify(&mint_hs256("t", &spec(), now), now)
        .is_err());
}

#[wasm_bindgen_test]
fn eddsa_on_wasm() {
    let now = clock::now_ms();
    let key = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([7; 32])).sk;
    let token = Ed25519
        .token(
            &Header::empty().with_key_id("ed"),
            &spec().claims(now),
            &key,
        )
        .unwrap();
    assert_eq!(verifier().verify(&token, now).unwrap().sub, "wasm");
    let other = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([8; 32])).sk;
    let forged = Ed25519
        .token(
            &Header::empty().with_key_id("ed"),
            &spec().claims(now),
            &other,
        )
        .unwrap();
    assert!(verifier().verify(&forged, now).is_err());
}

#[wasm_bindgen_test]
fn es256_on_wasm() {
    let now = clock::now_ms();
    let key = p256::ecdsa::SigningKey::from_slice(&[9; 32]).unwrap();
    let token = Es256
        .token(
            &Header::empty().with_key_id("ec"),
            &spec().claims(now),
            &key,
        )
        .unwrap();
    assert_eq!(verifier().verify(&token, now).unwrap().sub, "wasm");
    assert!(
        verifier().verify(&token, now + 120_000).is_err(),
        "expired one minute after exp"
    );
}

#[wasm_bindgen_test]
fn ids_on_wasm() {
    let now = clock::now_ms();
    let a = ids::message_id(now);
    let b = ids::message_id(now);
    assert_ne!(a, b, "ids need real randomness");
    assert_eq!((a.len(), &a[14..15]), (36, "7"));
    assert!(ids::conn_id().starts_with("c_") && ids::epoch().starts_with("e_"));
    assert_ne!(ids::epoch(), ids::epoch());
}

#[wasm_bindgen_test]
fn clock_on_wasm() {
    let now = clock::now_ms();
    // Between 2024 and 2100: the JavaScript clock, not zero or garbage.
    assert!(
        (1_704_067_200_000..4_102_444_800_000).contains(&now),
        "{now}"
    );
}
