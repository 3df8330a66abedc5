//! The token validation matrix of docs/protocol.md, "Tokens": every accepted algorithm,
//! and every way a token must be refused, against one verifier configured
//! like a production worker (HS256 secret plus an EdDSA and an ES256 key in
//! the JWKS).

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jwt_compact::alg::{Ed25519, Es256, Hs256, Hs256Key};
use jwt_compact::{AlgorithmExt, Header};
use roomcast_protocol::auth::{AuthError, KeyConfigError, Verifier, VerifierConfig};
use roomcast_protocol::signing::{mint_hs256, TokenSpec};
use serde_json::json;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const NOW_MS: u64 = 1_800_000_000_000;
const SECRET: &str = "matrix-secret";

fn ed_key() -> ed25519_compact::KeyPair {
    ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([7; 32]))
}

fn ec_key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[9; 32]).unwrap()
}

fn jwks() -> String {
    let point = ec_key().verifying_key().to_encoded_point(false);
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64(ed_key().pk.as_ref())},
        {"kty": "EC", "crv": "P-256", "kid": "ec", "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())},
    ]})
    .to_string()
}

fn config() -> VerifierConfig {
    VerifierConfig {
        hs256_secret: Some(SECRET.into()),
        jwks: Some(jwks()),
        leeway_secs: 30,
        ..VerifierConfig::default()
    }
}

fn verifier() -> Verifier {
    Verifier::new(&config()).unwrap()
}

fn spec() -> TokenSpec {
    TokenSpec {
        sub: "alice".into(),
        rooms: vec!["chat.*".into()],
        publish: vec!["chat.lobby".into()],
        ttl_secs: 600,
        ..TokenSpec::default()
    }
}

fn hs(spec: &TokenSpec, issued_ms: u64) -> String {
    mint_hs256(SECRET, spec, issued_ms)
}

fn ed(kid: &str) -> String {
    Ed25519
        .token(
            &Header::empty().with_key_id(kid),
            &spec().claims(NOW_MS),
            &ed_key().sk,
        )
        .unwrap()
}

fn ec(kid: &str) -> String {
    Es256
        .token(
            &Header::empty().with_key_id(kid),
            &spec().claims(NOW_MS),
            &ec_key(),
        )
        .unwrap()
}

#[test]
fn each_algorithm_verifies_and_carries_rights() {
    for token in [hs(&spec(), NOW_MS), ed("ed"), ec("ec")] {
        let id = verifier().verify(&token, NOW_MS).unwrap();
        assert_eq!(id.sub, "alice");
        assert_eq!(id.exp, NOW_MS / 1000 + 600);
        assert!(id.rights.can_subscribe("chat.x") && !id.rights.can_subscribe("news"));
        assert!(id.rights.can_publish("chat.lobby") && !id.rights.can_publish("chat.x"));
        assert!(!id.rights.bridge);
    }
}

#[test]
fn a_sole_key_needs_no_kid() {
    let token = Ed25519
        .token(&Header::empty(), &spec().claims(NOW_MS), &ed_key().sk)
        .unwrap();
    assert!(verifier().verify(&token, NOW_MS).is_ok());
}

#[test]
fn bridge_role() {
    let token = hs(
        &TokenSpec {
            role: Some("bridge".into()),
            rooms: vec![],
            publish: vec![],
            ..spec()
        },
        NOW_MS,
    );
    let id = verifier().verify(&token, NOW_MS).unwrap();
    assert!(id.rights.bridge && id.rights.can_publish("anything"));
}

fn bridge_ed(kid: &str, iss: Option<&str>) -> String {
    let spec = TokenSpec {
        role: Some("bridge".into()),
        iss: iss.map(str::to_owned),
        ..spec()
    };
    Ed25519
        .token(
            &Header::empty().with_key_id(kid),
            &spec.claims(NOW_MS),
            &ed_key().sk,
        )
        .unwrap()
}

#[test]
fn only_the_configured_keys_or_issuer_mint_the_bridge_role() {
    // The JWKS holds the keys of the service that signs client tokens: its
    // tokens claiming the bridge's role are refused unless it is named.
    assert_eq!(
        verifier()
            .verify(&bridge_ed("ed", None), NOW_MS)
            .unwrap_err(),
        AuthError::BridgeRoleRefused
    );
    assert!(
        verifier().verify(&ed("ed"), NOW_MS).is_ok(),
        "its client tokens still verify"
    );
    let by_kid = Verifier::new(&VerifierConfig {
        bridge_kids: vec!["ed".into()],
        ..config()
    })
    .unwrap();
    assert!(
        by_kid
            .verify(&bridge_ed("ed", None), NOW_MS)
            .unwrap()
            .rights
            .bridge
    );
    let hs_bridge = hs(
        &TokenSpec {
            role: Some("bridge".into()),
            ..spec()
        },
        NOW_MS,
    );
    assert_eq!(
        by_kid.verify(&hs_bridge, NOW_MS).unwrap_err(),
        AuthError::BridgeRoleRefused,
        "once keys are named, the secret is not one of them"
    );
    let by_issuer = Verifier::new(&VerifierConfig {
        bridge_issuer: Some("bridge-minter".into()),
        ..config()
    })
    .unwrap();
    assert!(by_issuer
        .verify(&bridge_ed("ed", Some("bridge-minter")), NOW_MS)
        .is_ok());
    assert_eq!(
        by_issuer
            .verify(&bridge_ed("ed", Some("client-idp")), NOW_MS)
            .unwrap_err(),
        AuthError::BridgeRoleRefused
    );
}

#[test]
fn an_identity_over_its_limit_is_refused_wherever_a_token_is_checked() {
    let many = TokenSpec {
        rooms: (0..400).map(|i| format!("room-pattern-{i:04}.*")).collect(),
        ..spec()
    };
    assert_eq!(
        verifier().verify(&hs(&many, NOW_MS), NOW_MS).unwrap_err(),
        AuthError::TooLarge
    );
}

#[test]
fn alg_none_is_refused() {
    let head = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
    let body = URL_SAFE_NO_PAD.encode(r#"{"sub":"x","exp":9999999999}"#);
    let err = verifier()
        .verify(&format!("{head}.{body}."), NOW_MS)
        .unwrap_err();
    assert!(
        matches!(err, AuthError::UnsupportedAlgorithm(ref a) if a == "none")
            || err == AuthError::Malformed,
        "{err:?}"
    );
}

#[test]
fn unknown_kid_and_key_mismatch_are_refused() {
    assert_eq!(
        verifier().verify(&ed("missing"), NOW_MS).unwrap_err(),
        AuthError::UnknownKey(Some("missing".into()))
    );
    assert!(matches!(
        verifier().verify(&ed("ec"), NOW_MS).unwrap_err(),
        AuthError::KeyMismatch(..)
    ));
    assert!(matches!(
        verifier().verify(&ec("ed"), NOW_MS).unwrap_err(),
        AuthError::KeyMismatch(..)
    ));
}

#[test]
fn hs256_needs_the_right_secret_and_a_configured_one() {
    let forged = Hs256
        .token(
            &Header::empty(),
            &spec().claims(NOW_MS),
            &Hs256Key::new(b"wrong"),
        )
        .unwrap();
    assert_eq!(
        verifier().verify(&forged, NOW_MS).unwrap_err(),
        AuthError::BadSignature
    );
    let no_secret = Verifier::new(&VerifierConfig {
        hs256_secret: None,
        ..config()
    })
    .unwrap();
    assert_eq!(
        no_secret.verify(&hs(&spec(), NOW_MS), NOW_MS).unwrap_err(),
        AuthError::UnknownKey(None)
    );
}

#[test]
fn tampered_payload_is_refused() {
    let token = hs(&spec(), NOW_MS);
    let parts: Vec<&str> = token.split('.').collect();
    let evil =
        URL_SAFE_NO_PAD.encode(r#"{"sub":"alice","exp":9999999999,"rooms":["*"],"publish":["*"]}"#);
    let err = verifier()
        .verify(&format!("{}.{evil}.{}", parts[0], parts[2]), NOW_MS)
        .unwrap_err();
    assert_eq!(err, AuthError::BadSignature);
}

#[test]
fn expiry_and_maturity_honour_the_leeway() {
    let issued = NOW_MS - 600_000;
    // exp == now - 0 s: accepted; exp 29 s ago: accepted; 31 s ago: refused.
    assert!(verifier().verify(&hs(&spec(), issued), NOW_MS).is_ok());
    assert!(verifier()
        .verify(&hs(&spec(), issued - 29_000), NOW_MS)
        .is_ok());
    assert_eq!(
        verifier()
            .verify(&hs(&spec(), issued - 31_000), NOW_MS)
            .unwrap_err(),
        AuthError::Expired
    );
    let future = |secs: u64| {
        hs(
            &TokenSpec {
                not_before_secs: Some(NOW_MS / 1000 + secs),
                ..spec()
            },
            NOW_MS,
        )
    };
    assert!(verifier().verify(&future(20), NOW_MS).is_ok());
    assert_eq!(
        verifier().verify(&future(40), NOW_MS).unwrap_err(),
        AuthError::NotYetValid
    );
}

#[test]
fn issuer_and_audience_when_configured() {
    let strict = Verifier::new(&VerifierConfig {
        issuer: Some("idp".into()),
        audience: Some("roomcast".into()),
        ..config()
    })
    .unwrap();
    let good = hs(
        &TokenSpec {
            iss: Some("idp".into()),
            aud: Some("roomcast".into()),
            ..spec()
        },
        NOW_MS,
    );
    assert!(strict.verify(&good, NOW_MS).is_ok());
    let wrong_iss = hs(
        &TokenSpec {
            iss: Some("other".into()),
            aud: Some("roomcast".into()),
            ..spec()
        },
        NOW_MS,
    );
    assert_eq!(
        strict.verify(&wrong_iss, NOW_MS).unwrap_err(),
        AuthError::BadIssuer
    );
    let wrong_aud = hs(
        &TokenSpec {
            iss: Some("idp".into()),
            aud: Some("else".into()),
            ..spec()
        },
        NOW_MS,
    );
    assert_eq!(
        strict.verify(&wrong_aud, NOW_MS).unwrap_err(),
        AuthError::BadAudience
    );
    assert_eq!(
        strict.verify(&hs(&spec(), NOW_MS), NOW_MS).unwrap_err(),
        AuthError::BadIssuer
    );
    // An audience list containing ours is accepted.
    let claims =
        json!({"sub": "alice", "exp": NOW_MS / 1000 + 60, "iss": "idp", "aud": ["x", "roomcast"]});
    let listed = Hs256
        .token(
            &Header::empty(),
            &jwt_compact::Claims::new(claims),
            &Hs256Key::new(SECRET.as_bytes()),
        )
        .unwrap();
    assert!(strict.verify(&listed, NOW_MS).is_ok());
    // Unconfigured, neither is checked.
    assert!(verifier().verify(&wrong_iss, NOW_MS).is_ok());
}

#[test]
fn required_claims() {
    let key = Hs256Key::new(SECRET.as_bytes());
    let no_sub = Hs256
        .token(
            &Header::empty(),
            &jwt_compact::Claims::new(json!({"exp": NOW_MS / 1000 + 60})),
            &key,
        )
        .unwrap();
    assert_eq!(
        verifier().verify(&no_sub, NOW_MS).unwrap_err(),
        AuthError::MissingClaim("sub")
    );
    let no_exp = Hs256
        .token(
            &Header::empty(),
            &jwt_compact::Claims::new(json!({"sub": "a"})),
            &key,
        )
        .unwrap();
    assert_eq!(
        verifier().verify(&no_exp, NOW_MS).unwrap_err(),
        AuthError::MissingClaim("exp")
    );
    let bad_rooms = Hs256
        .token(
            &Header::empty(),
            &jwt_compact::Claims::new(json!({"sub": "a", "exp": NOW_MS / 1000 + 60, "rooms": "*"})),
            &key,
        )
        .unwrap();
    assert!(matches!(
        verifier().verify(&bad_rooms, NOW_MS).unwrap_err(),
        AuthError::BadClaims(_)
    ));
}

#[test]
fn malformed_tokens() {
    for junk in ["", "a", "a.b", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9.!!.x"] {
        assert!(verifier().verify(junk, NOW_MS).is_err(), "{junk:?}");
    }
}

#[test]
fn bad_jwks_is_a_configuration_error() {
    let bad = |jwks: &str| {
        Verifier::new(&VerifierConfig {
            jwks: Some(jwks.into()),
            ..config()
        })
        .err()
    };
    assert!(matches!(bad("nope"), Some(KeyConfigError::NotJwks(_))));
    assert!(
        matches!(bad(r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k","x":"AAAA"}]}"#), Some(KeyConfigError::BadKey { ref kid, .. }) if kid == "k")
    );
    assert!(matches!(
        bad(r#"{"keys":[{"kty":"RSA","kid":"r"}]}"#),
        Some(KeyConfigError::BadKey { .. })
    ));
    assert!(Verifier::new(&VerifierConfig {
        jwks: Some("  ".into()),
        ..config()
    })
    .is_ok());
}
