//! The token target's world: a verifier configured with every kind of key at
//! once (docs/protocol.md, "Tokens": `JWT_SECRET`, a JWKS holding an Ed25519
//! and a P-256 key, `JWT_ISSUER`, `JWT_AUDIENCE`, 30 s leeway), the keys that
//! sign for it, and tokens it accepts or refuses for one reason each, for the
//! fuzzer to mutate.
//!
//! Keys come from fixed seeds so every run, and every crash input, means the
//! same thing.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jwt_compact::alg::{Ed25519, Es256, Hs256};
use jwt_compact::{Algorithm, AlgorithmSignature};
use p256::ecdsa::signature::Verifier as _;
use roomcast_protocol::auth::{Verifier, VerifierConfig};
use roomcast_protocol::signing::{SigningKey, TokenSpec};
use serde_json::{json, Value};

/// The clock every token is checked against.
pub const NOW_MS: u64 = 1_800_000_000_000;
pub const LEEWAY_SECS: u64 = 30;
pub const ISSUER: &str = "roomcast-fuzz";
pub const AUDIENCE: &str = "rooms";
const SECRET: &str = "fuzz-secret";

/// The verifier, the keys it trusts and tokens signed by them.
pub struct Fixture {
    pub verifier: Verifier,
    /// HS256; EdDSA and ES256 named by `kid`; EdDSA without a `kid` (the
    /// verifier then picks the only key of that algorithm).
    pub keys: Vec<SigningKey>,
    /// Accepted tokens from every key, then tokens refused for one claim
    /// each (expired, not yet valid, another issuer, another audience, no
    /// `sub`).
    pub tokens: Vec<String>,
}

/// The verifier, its keys and tokens; a target builds it once per process.
pub fn fixture() -> Fixture {
    let ed = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([1; 32]));
    let ec = p256::ecdsa::SigningKey::from_slice(&[2; 32]).expect("a valid P-256 scalar");
    let keys = vec![
        SigningKey::hs256(SECRET),
        SigningKey::Ed25519 {
            key: ed.clone(),
            kid: Some("ed-1".into()),
        },
        SigningKey::Es256 {
            key: ec,
            kid: Some("ec-1".into()),
        },
        SigningKey::Ed25519 { key: ed, kid: None },
    ];
    let public: Vec<Value> = keys[1..3]
        .iter()
        .filter_map(SigningKey::public_jwks)
        .map(|jwks| {
            let jwks: Value = serde_json::from_str(&jwks).expect("a JWKS");
            jwks["keys"][0].clone()
        })
        .collect();
    let verifier = Verifier::new(&VerifierConfig {
        hs256_secret: Some(SECRET.into()),
        jwks: Some(json!({ "keys": public }).to_string()),
        issuer: Some(ISSUER.into()),
        audience: Some(AUDIENCE.into()),
        leeway_secs: LEEWAY_SECS,
        ..VerifierConfig::default()
    })
    .expect("the fixture's JWKS is valid");
    let good = TokenSpec {
        sub: "alice".into(),
        rooms: vec!["chat.*".into()],
        publish: vec!["chat.lobby".into()],
        role: None,
        iss: Some(ISSUER.into()),
        aud: Some(AUDIENCE.into()),
        ttl_secs: 3600,
        not_before_secs: None,
        presence: vec!["chat.*".into()],
        channels: vec!["chat.lobby".into()],
        info: Some(json!({"name": "Alice"})),
    };
    let refused = [
        (
            TokenSpec {
                ttl_secs: 60,
                ..good.clone()
            },
            NOW_MS - 3_600_000,
        ),
        (
            TokenSpec {
                not_before_secs: Some(NOW_MS / 1000 + 3600),
                ..good.clone()
            },
            NOW_MS,
        ),
        (
            TokenSpec {
                iss: Some("someone-else".into()),
                ..good.clone()
            },
            NOW_MS,
        ),
        (
            TokenSpec {
                aud: None,
                ..good.clone()
            },
            NOW_MS,
        ),
        (
            TokenSpec {
                sub: String::new(),
                role: Some("bridge".into()),
                ..good.clone()
            },
            NOW_MS,
        ),
    ];
    let mut tokens: Vec<String> = keys.iter().map(|k| k.mint(&good, NOW_MS)).collect();
    tokens.extend(refused.iter().map(|(spec, at)| keys[0].mint(spec, *at)));
    Fixture {
        verifier,
        keys,
        tokens,
    }
}

/// Does `signature` over `signing_input` verify with `key`? Checked with the
/// key's own library, not with jwt-compact, so the verifier is compared with
/// an implementation it does not share.
pub fn signed_by(key: &SigningKey, signing_input: &str, signature: &[u8]) -> bool {
    let message = signing_input.as_bytes();
    match key {
        SigningKey::Hs256(key) => Hs256.sign(key, message).as_bytes() == signature,
        SigningKey::Ed25519 { key, .. } => ed25519_compact::Signature::from_slice(signature)
            .is_ok_and(|s| key.pk.verify(message, &s).is_ok()),
        SigningKey::Es256 { key, .. } => p256::ecdsa::Signature::from_slice(signature)
            .is_ok_and(|s| key.verifying_key().verify(message, &s).is_ok()),
    }
}

/// Signs `header.payload` (both already base64url) with `key`, returning the
/// compact token: how a holder of a trusted key makes a token with any
/// header and claims at all.
pub fn sign(key: &SigningKey, signing_input: &str) -> String {
    let message = signing_input.as_bytes();
    let signature = match key {
        SigningKey::Hs256(key) => Hs256.sign(key, message).as_bytes().into_owned(),
        SigningKey::Ed25519 { key, .. } => Ed25519.sign(&key.sk, message).as_bytes().into_owned(),
        SigningKey::Es256 { key, .. } => Es256.sign(key, message).as_bytes().into_owned(),
    };
    format!("{signing_input}.{}", b64(&signature))
}

/// Unpadded base64url, as in compact JWTs.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}
