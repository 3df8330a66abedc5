//! Token verification (docs/protocol.md, "Tokens"), with `jwt-compact`.
//!
//! A [`Verifier`] is built once from configuration (the HS256 secret and the
//! JWKS of public keys) and then checks compact JWTs against a caller-supplied
//! clock, so the same code runs in the worker, in the bridge and in tests.
//! The algorithm is taken from the token header only to pick a key; the key's
//! own type must agree, which is what rules out `alg: none` and
//! algorithm-confusion attacks.

use std::collections::HashMap;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jwt_compact::{
    alg::{Ed25519, Es256, Hs256, Hs256Key},
    AlgorithmExt, Claims, UntrustedToken,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::policy::compact;
use crate::rights::Rights;

/// Why a token was refused. The message is safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("token is not a well-formed compact JWT")]
    Malformed,
    #[error("algorithm {0} is not accepted")]
    UnsupportedAlgorithm(String),
    #[error("no key configured for this token (kid {0:?})")]
    UnknownKey(Option<String>),
    #[error("key {0} is not a key for algorithm {1}")]
    KeyMismatch(String, String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("claims are malformed: {0}")]
    BadClaims(String),
    #[error("required claim {0} is missing")]
    MissingClaim(&'static str),
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token issuer is not accepted")]
    BadIssuer,
    #[error("token audience is not accepted")]
    BadAudience,
    #[error("this key or issuer may not issue bridge tokens (JWT_BRIDGE_KIDS, JWT_BRIDGE_ISSUER)")]
    BridgeRoleRefused,
    #[error(
        "the token's identity (sub, exp, room patterns and info) is over {MAX_IDENTITY_BYTES} bytes"
    )]
    TooLarge,
    #[error("the token's info claim is over {MAX_INFO_BYTES} bytes (as compact JSON)")]
    InfoTooLarge,
}

/// Largest identity (as JSON) a token may carry: it rides in every
/// connection's socket attachment, which the runtime caps at 16 KiB
/// together with the rest of the session.
pub const MAX_IDENTITY_BYTES: usize = 8 * 1024;

/// Largest `info` claim, as compact JSON: every presence frame that names
/// the connection carries it, to every member of the room.
pub const MAX_INFO_BYTES: usize = 1024;

/// Why the verifier could not be built: a deployment mistake, reported loudly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyConfigError {
    #[error("JWT_PUBLIC_KEYS is not a JWKS ({{\"keys\":[...]}}): {0}")]
    NotJwks(String),
    #[error("JWT_PUBLIC_KEYS key {kid:?}: {reason}")]
    BadKey { kid: String, reason: String },
}

/// A token's audience: one string or a list (RFC 7519 section 4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, wanted: &str) -> bool {
        match self {
            Audience::One(a) => a == wanted,
            Audience::Many(list) => list.iter().any(|a| a == wanted),
        }
    }
}

/// The claims roomcast reads, besides the registered time claims.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RoomClaims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rooms: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub presence: Vec<String>,
    /// Rooms a multiplexed connection is subscribed to at connect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    /// What the connection shows the room about itself, any JSON. Written
    /// when minting, never read here: jwt-compact reads custom claims through
    /// `#[serde(flatten)]`, which cannot hand a field its raw text, so
    /// [`Verifier::verify`] reads this claim from the payload itself.
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub info: Option<Box<RawValue>>,
}

/// Who a verified token speaks for, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    pub rights: Rights,
    /// The `info` claim as compact JSON text, at most [`MAX_INFO_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
}

impl Identity {
    /// The identity as one header value (base64url of its JSON), for the
    /// hop from the router to the room: a header carries Latin-1 at best, a
    /// subject or a room pattern may be in any script.
    pub fn to_header(&self) -> String {
        let json = serde_json::to_vec(self).expect("an identity is plain data");
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Reads [`Identity::to_header`]'s form back.
    pub fn from_header(value: &str) -> Option<Identity> {
        let json = URL_SAFE_NO_PAD.decode(value.trim()).ok()?;
        serde_json::from_slice(&json).ok()
    }
}

/// A public key from the JWKS, tagged with the algorithm it verifies.
enum PublicKey {
    Ed25519(ed25519_compact::PublicKey),
    Es256(p256::ecdsa::VerifyingKey),
}

impl PublicKey {
    fn algorithm(&self) -> &'static str {
        match self {
            PublicKey::Ed25519(_) => "EdDSA",
            PublicKey::Es256(_) => "ES256",
        }
    }
}

/// One entry of a JWKS, as much of it as roomcast reads.
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

fn decode_b64(field: &str, value: Option<&String>) -> Result<Vec<u8>, String> {
    let value = value.ok_or_else(|| format!("missing {field}"))?;
    URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|e| format!("{field} is not base64url: {e}"))
}

fn parse_jwk(jwk: &Jwk) -> Result<PublicKey, String> {
    match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("OKP", Some("Ed25519")) => {
            let x = decode_b64("x", jwk.x.as_ref())?;
            ed25519_compact::PublicKey::from_slice(&x)
                .map(PublicKey::Ed25519)
                .map_err(|e| format!("bad Ed25519 key: {e}"))
        }
        ("EC", Some("P-256")) => {
            let mut point = vec![0x04];
            point.extend(decode_b64("x", jwk.x.as_ref())?);
            point.extend(decode_b64("y", jwk.y.as_ref())?);
            p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                .map(PublicKey::Es256)
                .map_err(|e| format!("bad P-256 key: {e}"))
        }
        (kty, crv) => Err(format!("unsupported key type {kty}/{crv:?}")),
    }
}

/// What a [`Verifier`] is built from (docs/protocol.md, "Configuration": `JWT_SECRET`,
/// `JWT_PUBLIC_KEYS`, `JWT_ISSUER`, `JWT_AUDIENCE`, `JWT_LEEWAY_SECS`).
#[derive(Debug, Clone, Default)]
pub struct VerifierConfig {
    pub hs256_secret: Option<String>,
    pub jwks: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_secs: u64,
    /// The only `kid`s whose tokens may carry `role: "bridge"`.
    pub bridge_kids: Vec<String>,
    /// The only `iss` a token with `role: "bridge"` may have.
    pub bridge_issuer: Option<String>,
}

/// Verifies compact JWTs against the configured keys and claim rules.
pub struct Verifier {
    hs256: Option<Hs256Key>,
    keys: HashMap<String, PublicKey>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
    bridge_kids: Vec<String>,
    bridge_issuer: Option<String>,
}

impl Verifier {
    pub fn new(config: &VerifierConfig) -> Result<Verifier, KeyConfigError> {
        let hs256 = config
            .hs256_secret
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| Hs256Key::new(s.as_bytes()));
        let keys = match config.jwks.as_deref().map(str::trim) {
            None | Some("") => HashMap::new(),
            Some(json) => parse_jwks(json)?,
        };
        Ok(Verifier {
            hs256,
            keys,
            issuer: config.issuer.clone().filter(|s| !s.is_empty()),
            audience: config.audience.clone().filter(|s| !s.is_empty()),
            leeway_secs: config.leeway_secs,
            bridge_kids: config.bridge_kids.clone(),
            bridge_issuer: config.bridge_issuer.clone().filter(|s| !s.is_empty()),
        })
    }

    /// Checks `token` at time `now_ms` and returns whom it speaks for.
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<Identity, AuthError> {
        let untrusted = UntrustedToken::new(token).map_err(|_| AuthError::Malformed)?;
        let claims = self.verify_signature(&untrusted)?;
        let bridge_allowed = self.may_issue_bridge_tokens(&untrusted, &claims.custom);
        let mut identity = self.check_claims(claims, now_ms)?;
        identity.info = info_claim(token)?;
        if identity.rights.bridge && !bridge_allowed {
            return Err(AuthError::BridgeRoleRefused);
        }
        if serde_json::to_vec(&identity).map_or(true, |json| json.len() > MAX_IDENTITY_BYTES) {
            return Err(AuthError::TooLarge);
        }
        Ok(identity)
    }

    /// Whether the key that signed `token` may issue the bridge's role: a
    /// `kid` in `JWT_BRIDGE_KIDS` and the `iss` of `JWT_BRIDGE_ISSUER`, as
    /// far as they are set; with neither set, only the HS256 secret, so a
    /// key that signs client tokens (a JWKS entry) never mints a bridge.
    fn may_issue_bridge_tokens(&self, token: &UntrustedToken<'_>, claims: &RoomClaims) -> bool {
        let kid = token.header().key_id.as_deref();
        let by_kid = self.bridge_kids.is_empty()
            || kid.is_some_and(|k| self.bridge_kids.iter().any(|b| b == k));
        let by_issuer = self
            .bridge_issuer
            .as_deref()
            .is_none_or(|wanted| claims.iss.as_deref() == Some(wanted));
        let configured = !self.bridge_kids.is_empty() || self.bridge_issuer.is_some();
        by_kid && by_issuer && (configured || token.algorithm() == "HS256")
    }

    fn verify_signature(
        &self,
        token: &UntrustedToken<'_>,
    ) -> Result<Claims<RoomClaims>, AuthError> {
        let alg = token.algorithm();
        let checked = match alg {
            "HS256" => {
                let key = self.hs256.as_ref().ok_or(AuthError::UnknownKey(None))?;
                Hs256.validator::<RoomClaims>(key).validate(token)
            }
            "EdDSA" | "ES256" => match self.public_key(&token.header().key_id, alg)? {
                PublicKey::Ed25519(key) => Ed25519.validator::<RoomClaims>(key).validate(token),
                PublicKey::Es256(key) => Es256.validator::<RoomClaims>(key).validate(token),
            },
            other => return Err(AuthError::UnsupportedAlgorithm(other.to_owned())),
        };
        checked.map(|t| t.claims().clone()).map_err(|e| match e {
            jwt_compact::ValidationError::MalformedClaims(e) => AuthError::BadClaims(e.to_string()),
            jwt_compact::ValidationError::MalformedSignature(_)
            | jwt_compact::ValidationError::InvalidSignature => AuthError::BadSignature,
            _ => AuthError::Malformed,
        })
    }

    /// The key named by `kid`; without a `kid`, the only key for `alg`.
    fn public_key(&self, kid: &Option<String>, alg: &str) -> Result<&PublicKey, AuthError> {
        let key = match kid {
            Some(kid) => self.keys.get(kid),
            None => {
                let mut candidates = self.keys.values().filter(|k| k.algorithm() == alg);
                match (candidates.next(), candidates.next()) {
                    (Some(only), None) => Some(only),
                    _ => None,
                }
            }
        };
        let key = key.ok_or_else(|| AuthError::UnknownKey(kid.clone()))?;
        if key.algorithm() != alg {
            let kid = kid.clone().unwrap_or_default();
            return Err(AuthError::KeyMismatch(kid, alg.to_owned()));
        }
        Ok(key)
    }

    fn check_claims(&self, claims: Claims<RoomClaims>, now_ms: u64) -> Result<Identity, AuthError> {
        let now = now_ms as i64 / 1000;
        let leeway = self.leeway_secs as i64;
        let exp = claims
            .expiration
            .ok_or(AuthError::MissingClaim("exp"))?
            .timestamp();
        if now > exp + leeway {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = claims.not_before {
            if now + leeway < nbf.timestamp() {
                return Err(AuthError::NotYetValid);
            }
        }
        let custom = claims.custom;
        if let Some(wanted) = &self.issuer {
            if custom.iss.as_deref() != Some(wanted.as_str()) {
                return Err(AuthError::BadIssuer);
            }
        }
        if let Some(wanted) = &self.audience {
            if !custom.aud.as_ref().is_some_and(|aud| aud.contains(wanted)) {
                return Err(AuthError::BadAudience);
            }
        }
        let sub = custom
            .sub
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::MissingClaim("sub"))?;
        Ok(Identity {
            sub,
            exp: exp.max(0) as u64,
            rights: Rights {
                rooms: custom.rooms,
                publish: custom.publish,
                bridge: custom.role.as_deref() == Some("bridge"),
                presence: custom.presence,
                channels: custom.channels,
            },
            info: None,
        })
    }
}

/// The `info` claim of `token` (whose signature already verified), compact.
///
/// The payload is read a second time, for this claim alone, so that the
/// value keeps the issuer's text (key order, numbers exactly as written)
/// rather than what a parsed value would print back.
fn info_claim(token: &str) -> Result<Option<String>, AuthError> {
    #[derive(Deserialize)]
    struct Payload {
        #[serde(default)]
        info: Option<Box<RawValue>>,
    }
    let payload = token.split('.').nth(1).ok_or(AuthError::Malformed)?;
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| AuthError::Malformed)?;
    let payload: Payload =
        serde_json::from_slice(&json).map_err(|e| AuthError::BadClaims(e.to_string()))?;
    let Some(raw) = payload.info else {
        return Ok(None);
    };
    let info = compact(raw.get()).into_owned();
    if info.len() > MAX_INFO_BYTES {
        return Err(AuthError::InfoTooLarge);
    }
    Ok(Some(info))
}

/// When a connection authenticated until `exp` (seconds since the epoch) is
/// closed with 4001, in ms since the epoch: `exp`, plus the clock leeway that
/// [`Verifier::verify`] also allows, plus the grace a connection gets to send
/// a fresh token. Client sessions and bridge links share this one rule, so a
/// token the verifier would still accept never closes a connection.
pub fn expiry_close_ms(exp: u64, leeway_secs: u64, grace_ms: u64) -> u64 {
    exp.saturating_add(leeway_secs)
        .saturating_mul(1000)
        .saturating_add(grace_ms)
}

fn parse_jwks(json: &str) -> Result<HashMap<String, PublicKey>, KeyConfigError> {
    let jwks: Jwks =
        serde_json::from_str(json).map_err(|e| KeyConfigError::NotJwks(e.to_string()))?;
    jwks.keys
        .iter()
        .enumerate()
        .map(|(i, jwk)| {
            let kid = jwk.kid.clone().unwrap_or_else(|| format!("#{i}"));
            let key = parse_jwk(jwk).map_err(|reason| KeyConfigError::BadKey {
                kid: kid.clone(),
                reason,
            })?;
            Ok((kid, key))
        })
        .collect()
}

/// The `exp` of a token, read without verifying it: for a holder that must
/// know when its own token needs replacing, never for admission.
pub fn unverified_expiry(token: &str) -> Option<u64> {
    let untrusted = UntrustedToken::new(token).ok()?;
    let claims = untrusted
        .deserialize_claims_unchecked::<RoomClaims>()
        .ok()?;
    claims.expiration.map(|exp| exp.timestamp().max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::{mint_hs256, TokenSpec};
    use jwt_compact::Header;
    use serde_json::json;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const NOW_MS: u64 = 1_800_000_000_000;
    const SECRET: &str = "unit-secret";

    fn verifier() -> Verifier {
        Verifier::new(&VerifierConfig {
            hs256_secret: Some(SECRET.into()),
            ..VerifierConfig::default()
        })
        .unwrap()
    }

    fn member(info: Option<serde_json::Value>) -> TokenSpec {
        TokenSpec {
            sub: "alice".into(),
            rooms: vec!["*".into()],
            presence: vec!["team.*".into()],
            info,
            ttl_secs: 600,
            ..TokenSpec::default()
        }
    }

    fn verify(spec: &TokenSpec) -> Result<Identity, AuthError> {
        verifier().verify(&mint_hs256(SECRET, spec, NOW_MS), NOW_MS)
    }

    /// A token whose `info` claim is `raw`, byte for byte (a minted one is
    /// already compact).
    fn with_raw_info(raw: &str) -> Result<Identity, AuthError> {
        let mut claims = member(None).claims(NOW_MS);
        claims.custom.info = Some(RawValue::from_string(raw.into()).unwrap());
        let token = Hs256
            .token(&Header::empty(), &claims, &Hs256Key::new(SECRET))
            .unwrap();
        verifier().verify(&token, NOW_MS)
    }

    #[test]
    fn presence_patterns_and_info_carry_through() {
        let id = verify(&member(Some(json!({"name": "Alice", "seat": 3})))).unwrap();
        assert_eq!(id.rights.presence, vec!["team.*".to_owned()]);
        assert!(id.rights.can_see_presence("team.a") && !id.rights.can_see_presence("lobby"));
        assert_eq!(id.info.as_deref(), Some(r#"{"name":"Alice","seat":3}"#));
        let plain = verify(&TokenSpec {
            presence: vec![],
            ..member(None)
        })
        .unwrap();
        assert!(plain.rights.presence.is_empty() && plain.info.is_none());
    }

    #[test]
    fn info_is_compacted_and_otherwise_kept_as_written() {
        let id = with_raw_info("{ \"z\" : [1.50, 1e2],\n  \"a\": \" spaced \" }").unwrap();
        assert_eq!(
            id.info.as_deref(),
            Some(r#"{"z":[1.50,1e2],"a":" spaced "}"#)
        );
        assert_eq!(with_raw_info("null").unwrap().info, None);
        assert_eq!(with_raw_info(" 7 ").unwrap().info.as_deref(), Some("7"));
    }

    #[test]
    fn info_over_the_limit_is_refused() {
        // A string's quotes count: 1022 characters make 1024 bytes.
        let at_limit = json!("x".repeat(MAX_INFO_BYTES - 2));
        let id = verify(&member(Some(at_limit))).unwrap();
        assert_eq!(id.info.map(|i| i.len()), Some(MAX_INFO_BYTES));
        let over = json!("x".repeat(MAX_INFO_BYTES - 1));
        let err = verify(&member(Some(over))).unwrap_err();
        assert_eq!(err, AuthError::InfoTooLarge);
        assert!(err.to_string().contains("1024 bytes"), "{err}");
        let padded = format!("[{}1]", " ".repeat(MAX_INFO_BYTES));
        assert_eq!(
            with_raw_info(&padded).unwrap().info.as_deref(),
            Some("[1]"),
            "the limit is on the compact form"
        );
    }

    #[test]
    fn expiry_close_adds_leeway_then_grace() {
        assert_eq!(expiry_close_ms(1_000, 30, 10_000), 1_040_000);
        assert_eq!(expiry_close_ms(1_000, 0, 0), 1_000_000);
        assert_eq!(expiry_close_ms(u64::MAX, 30, 1), u64::MAX);
    }

    #[test]
    fn identities_of_any_script_survive_the_header() {
        let identity = Identity {
            sub: "Łukasz-東京".into(),
            exp: 9,
            rights: Rights {
                rooms: vec!["café.*".into()],
                publish: vec!["*".into()],
                bridge: false,
                presence: vec!["café.*".into()],
                channels: vec!["café.menu".into()],
            },
            info: Some(r#"{"name":"Łukasz","tags":["a","b"]}"#.into()),
        };
        let header = identity.to_header();
        assert!(header.is_ascii());
        assert_eq!(Identity::from_header(&header), Some(identity));
        assert_eq!(Identity::from_header("not base64 {}"), None);
    }

    #[test]
    fn identities_without_info_leave_it_out_and_read_back() {
        let identity = Identity {
            sub: "s".into(),
            exp: 9,
            rights: Rights::default(),
            info: None,
        };
        let json = serde_json::to_string(&identity).unwrap();
        assert!(!json.contains("info"), "{json}");
        assert_eq!(Identity::from_header(&identity.to_header()), Some(identity));
    }
}
