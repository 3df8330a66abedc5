//! Token verification, three ways, chosen by the first byte (mod 3):
//!
//! - 0: the rest is the token, any text at all;
//! - 1: one of the fixture's tokens (picked by the second byte), edited by
//!   the rest, four bytes an edit: operation, position (u16, little-endian)
//!   and byte: replace, insert, remove, or cut the token there;
//! - 2: the rest is a header and claims (split at the first newline, any
//!   bytes), signed by one of the trusted keys (picked by the second byte):
//!   what a holder of a key may send, reaching the claim checks.
//!
//! The verifier must refuse with a typed error that answers as the worker
//! answers it (401 `unauthorized` over HTTP, a `bad_token` error frame on a
//! socket), and accept only what a trusted key signed as it is, claims that
//! pass the issuer, audience and time checks.
#![no_main]

use std::sync::LazyLock;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use libfuzzer_sys::fuzz_target;
use roomcast_fuzz::contract;
use roomcast_fuzz::tokens::{self, b64, Fixture, AUDIENCE, ISSUER, LEEWAY_SECS, NOW_MS};
use roomcast_protocol::auth::Identity;
use roomcast_protocol::ErrorCode;
use serde_json::Value;

/// The fixture, checked once: its good tokens pass, the others do not.
static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let fixture = tokens::fixture();
    let accepted = fixture
        .tokens
        .iter()
        .filter(|t| fixture.verifier.verify(t, NOW_MS).is_ok())
        .count();
    assert_eq!(accepted, fixture.keys.len(), "one good token per key");
    fixture
});

fuzz_target!(|bytes: &[u8]| {
    let fixture = &*FIXTURE;
    let Some((&mode, rest)) = bytes.split_first() else {
        return;
    };
    let pick = |len: usize| rest.first().map_or(0, |&b| usize::from(b) % len);
    let tail = rest.get(1..).unwrap_or_default();
    let token = match mode % 3 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        1 => edit(&fixture.tokens[pick(fixture.tokens.len())], tail),
        _ => {
            let split = tail.iter().position(|&b| b == b'\n').unwrap_or(tail.len());
            let (header, claims) = (&tail[..split], tail.get(split + 1..).unwrap_or_default());
            let input = format!("{}.{}", b64(header), b64(claims));
            tokens::sign(&fixture.keys[pick(fixture.keys.len())], &input)
        }
    };
    match fixture.verifier.verify(&token, NOW_MS) {
        Ok(identity) => {
            assert!(!identity.sub.is_empty(), "{token}");
            assert!(identity.exp + LEEWAY_SECS >= NOW_MS / 1000, "{token}");
            // Nothing but a trusted key's own signature over these exact
            // header and claims passes, and the claims passed every check.
            let (input, claims, signature) = split(&token);
            assert!(
                fixture
                    .keys
                    .iter()
                    .any(|k| tokens::signed_by(k, input, &signature)),
                "a forged token was accepted: {token}"
            );
            claims_pass(&claims, &identity, &token);
        }
        Err(e) => {
            let message = e.to_string();
            contract::http_error(ErrorCode::Unauthorized, &message);
            contract::error_frame(ErrorCode::BadToken, &message, None);
        }
    }
});

/// Applies the edits in `script` to `token`.
fn edit(token: &str, script: &[u8]) -> String {
    let mut bytes = token.as_bytes().to_vec();
    for step in script.chunks_exact(4) {
        let at = usize::from(u16::from_le_bytes([step[1], step[2]])) % (bytes.len() + 1);
        match step[0] % 4 {
            0 if at < bytes.len() => bytes[at] = step[3],
            1 => bytes.insert(at, step[3]),
            2 if at < bytes.len() => {
                bytes.remove(at);
            }
            3 => bytes.truncate(at),
            _ => {}
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The signed part of an accepted token, its claims and its signature,
/// decoded.
fn split(token: &str) -> (&str, Vec<u8>, Vec<u8>) {
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .unwrap_or_else(|e| panic!("accepted a part that is not base64url ({e}): {token}"))
    };
    let (input, signature) = token.rsplit_once('.').expect("an accepted token is signed");
    let claims = input
        .split('.')
        .nth(1)
        .expect("an accepted token has claims");
    (input, decode(claims), decode(signature))
}

/// The claims of an accepted token name the configured issuer and audience
/// and the identity's subject.
fn claims_pass(claims: &[u8], identity: &Identity, token: &str) {
    let claims: Value = serde_json::from_slice(claims)
        .unwrap_or_else(|e| panic!("accepted claims that are not JSON ({e}): {token}"));
    assert_eq!(claims["sub"], identity.sub.as_str(), "{token}");
    assert_eq!(claims["iss"], ISSUER, "{token}");
    let audience_named = match &claims["aud"] {
        Value::String(aud) => aud == AUDIENCE,
        Value::Array(list) => list.iter().any(|a| a == AUDIENCE),
        _ => false,
    };
    assert!(audience_named, "{token}");
}
