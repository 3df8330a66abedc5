//! Minting tokens: what the bridge signs its own short-lived service tokens
//! with, and what dev tools and tests sign theirs with.
//!
//! Three kinds of key, matching what [`crate::auth::Verifier`] accepts: the
//! shared HS256 secret, or a private Ed25519 (EdDSA) or P-256 (ES256) key in
//! PEM. With a private key the worker holds only the public half (its
//! `JWT_PUBLIC_KEYS`), so a leaked worker configuration cannot mint tokens;
//! [`SigningKey::public_jwks`] prints that half in the form the worker reads.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chrono::{DateTime, Utc};
use jwt_compact::alg::{Ed25519, Es256, Hs256, Hs256Key};
use jwt_compact::{AlgorithmExt, Claims, Header};
use p256::pkcs8::DecodePrivateKey;
use serde_json::json;

use crate::auth::{Audience, RoomClaims};

/// What to put in a minted token.
#[derive(Debug, Clone, Default)]
pub struct TokenSpec {
    pub sub: String,
    pub rooms: Vec<String>,
    pub publish: Vec<String>,
    pub role: Option<String>,
    pub iss: Option<String>,
    pub aud: Option<String>,
    pub ttl_secs: u64,
    pub not_before_secs: Option<u64>,
    pub presence: Vec<String>,
    /// Rooms a multiplexed connection is subscribed to at connect.
    pub channels: Vec<String>,
    pub info: Option<serde_json::Value>,
}

impl TokenSpec {
    /// The claims of this spec, issued at `now_ms`.
    pub fn claims(&self, now_ms: u64) -> Claims<RoomClaims> {
        let at = |secs: u64| DateTime::<Utc>::from_timestamp(secs as i64, 0).unwrap_or_default();
        let now = now_ms / 1000;
        let mut claims = Claims::new(RoomClaims {
            sub: Some(self.sub.clone()),
            rooms: self.rooms.clone(),
            publish: self.publish.clone(),
            role: self.role.clone(),
            iss: self.iss.clone(),
            aud: self.aud.clone().map(Audience::One),
            presence: self.presence.clone(),
            channels: self.channels.clone(),
            info: self.info.as_ref().map(|info| {
                serde_json::value::to_raw_value(info).expect("a JSON value always serializes")
            }),
        });
        claims.issued_at = Some(at(now));
        claims.expiration = Some(at(now + self.ttl_secs));
        claims.not_before = self.not_before_secs.map(at);
        claims
    }
}

/// A private key file that cannot sign tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an Ed25519 or P-256 private key in PEM (PKCS#8 \"PRIVATE KEY\" or SEC1 \"EC PRIVATE KEY\")")]
pub struct PemError;

/// A key that signs tokens.
pub enum SigningKey {
    Hs256(Hs256Key),
    Ed25519 {
        key: ed25519_compact::KeyPair,
        kid: Option<String>,
    },
    Es256 {
        key: p256::ecdsa::SigningKey,
        kid: Option<String>,
    },
}

impl SigningKey {
    /// The shared secret the worker knows as `JWT_SECRET`.
    pub fn hs256(secret: &str) -> SigningKey {
        SigningKey::Hs256(Hs256Key::new(secret.as_bytes()))
    }

    /// A private key from PEM text, named `kid` in the tokens it signs.
    pub fn from_pem(pem: &str, kid: Option<String>) -> Result<SigningKey, PemError> {
        if let Ok(key) = ed25519_compact::KeyPair::from_pem(pem) {
            return Ok(SigningKey::Ed25519 { key, kid });
        }
        if let Ok(key) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
            return Ok(SigningKey::Es256 { key, kid });
        }
        match p256::SecretKey::from_sec1_pem(pem) {
            Ok(secret) => Ok(SigningKey::Es256 {
                key: secret.into(),
                kid,
            }),
            Err(_) => Err(PemError),
        }
    }

    /// The JWT `alg` this key signs with.
    pub fn algorithm(&self) -> &'static str {
        match self {
            SigningKey::Hs256(_) => "HS256",
            SigningKey::Ed25519 { .. } => "EdDSA",
            SigningKey::Es256 { .. } => "ES256",
        }
    }

    /// A compact JWT for `spec`, issued at `now_ms`.
    pub fn mint(&self, spec: &TokenSpec, now_ms: u64) -> String {
        let claims = spec.claims(now_ms);
        let header = |kid: &Option<String>| match kid {
            Some(kid) => Header::empty().with_key_id(kid.clone()),
            None => Header::empty(),
        };
        let token = match self {
            SigningKey::Hs256(key) => Hs256.token(&Header::empty(), &claims, key),
            SigningKey::Ed25519 { key, kid } => Ed25519.token(&header(kid), &claims, &key.sk),
            SigningKey::Es256 { key, kid } => Es256.token(&header(kid), &claims, key),
        };
        token.expect("serializing plain claims cannot fail")
    }

    /// The public half as a JWKS for the worker's `JWT_PUBLIC_KEYS`; `None`
    /// for a shared secret, which has no public half.
    pub fn public_jwks(&self) -> Option<String> {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let mut jwk = match self {
            SigningKey::Hs256(_) => return None,
            SigningKey::Ed25519 { key, .. } => {
                json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "x": b64(key.pk.as_ref())})
            }
            SigningKey::Es256 { key, .. } => {
                let point = key.verifying_key().to_encoded_point(false);
                json!({
                    "kty": "EC", "crv": "P-256", "alg": "ES256",
                    "x": b64(point.x().map(|x| &x[..]).unwrap_or_default()),
                    "y": b64(point.y().map(|y| &y[..]).unwrap_or_default()),
                })
            }
        };
        if let SigningKey::Ed25519 { kid: Some(kid), .. }
        | SigningKey::Es256 { kid: Some(kid), .. } = self
        {
            jwk["kid"] = json!(kid);
        }
        Some(json!({ "keys": [jwk] }).to_string())
    }
}

/// Mints an HS256 token for `spec`, signed with `secret`.
pub fn mint_hs256(secret: &str, spec: &TokenSpec, now_ms: u64) -> String {
    SigningKey::hs256(secret).mint(spec, now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Verifier, VerifierConfig};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const NOW_MS: u64 = 1_800_000_000_000;

    fn spec() -> TokenSpec {
        TokenSpec {
            sub: "roomcast-bridge".into(),
            role: Some("bridge".into()),
            iss: Some("issuer".into()),
            aud: Some("rooms".into()),
            ttl_secs: 900,
            ..TokenSpec::default()
        }
    }

    fn verifies_with_its_own_jwks(key: SigningKey) {
        let verifier = Verifier::new(&VerifierConfig {
            jwks: key.public_jwks(),
            issuer: Some("issuer".into()),
            audience: Some("rooms".into()),
            bridge_issuer: Some("issuer".into()),
            ..VerifierConfig::default()
        })
        .unwrap();
        let identity = verifier.verify(&key.mint(&spec(), NOW_MS), NOW_MS).unwrap();
        assert!(identity.rights.bridge);
        assert_eq!(identity.exp, NOW_MS / 1000 + 900);
    }

    #[test]
    fn ed25519_pkcs8_pem() {
        let pair = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([3; 32]));
        let key = SigningKey::from_pem(&pair.sk.to_pem(), Some("ed-1".into())).unwrap();
        assert_eq!(key.algorithm(), "EdDSA");
        assert!(key.public_jwks().unwrap().contains(r#""kid":"ed-1""#));
        verifies_with_its_own_jwks(key);
    }

    #[test]
    fn p256_pkcs8_and_sec1_pem() {
        use p256::pkcs8::{EncodePrivateKey, LineEnding};
        let secret = p256::SecretKey::from_slice(&[5; 32]).unwrap();
        let pkcs8 = secret.to_pkcs8_pem(LineEnding::LF).unwrap();
        let sec1 = secret.to_sec1_pem(LineEnding::LF).unwrap();
        for pem in [pkcs8.as_str(), sec1.as_str()] {
            let key = SigningKey::from_pem(pem, None).unwrap();
            assert_eq!(key.algorithm(), "ES256");
            verifies_with_its_own_jwks(key);
        }
    }

    #[test]
    fn other_pem_is_refused() {
        assert_eq!(
            SigningKey::from_pem(
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                None
            )
            .err(),
            Some(PemError)
        );
        assert!(SigningKey::hs256("s").public_jwks().is_none());
    }
}
