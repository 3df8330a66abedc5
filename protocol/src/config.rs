//! Worker configuration (docs/protocol.md, "Configuration"), read from any
//! name → value lookup.
//!
//! The worker passes a closure over its `Env` (so `wrangler.toml` vars,
//! `.dev.vars` and `wrangler dev --var` all apply); tests pass a map. Bad
//! values are reported with the variable's name rather than silently
//! replaced by a default.

use serde::Deserialize;

use crate::auth::VerifierConfig;
use crate::rights::pattern_matches;

/// Limits that apply to one room; `ROOM_POLICIES` may override them per room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub rate_per_sec: u32,
    pub rate_burst: u32,
    pub room_rate_per_sec: u32,
    pub rate_strikes: u32,
    pub heartbeat_ms: u64,
    pub idle_timeout_ms: u64,
    pub token_grace_ms: u64,
    pub history_limit: u64,
    pub history_ttl_secs: u64,
    /// Messages a room holds for a bridge that has not confirmed them.
    pub outbox_limit: u64,
    /// WebSockets one subject may hold open in the room.
    pub max_connections_per_subject: u32,
    /// How long a room with no sockets and nothing pending waits after its
    /// last message before it retires.
    pub room_retire_ms: u64,
    /// Client sockets one object of the room holds; past it, connections go
    /// to the room's shards (docs/scaling.md).
    pub room_shard_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 65_536,
            rate_per_sec: 20,
            rate_burst: 40,
            room_rate_per_sec: 1000,
            rate_strikes: 3,
            heartbeat_ms: 30_000,
            idle_timeout_ms: 90_000,
            token_grace_ms: 10_000,
            history_limit: 1000,
            history_ttl_secs: 86_400,
            outbox_limit: 100_000,
            max_connections_per_subject: 16,
            room_retire_ms: 7 * 86_400_000,
            room_shard_size: crate::shard::DEFAULT_SHARD_SIZE,
        }
    }
}

/// One `ROOM_POLICIES` entry: a room pattern and the limits it overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomPolicy {
    #[serde(rename = "match")]
    pub pattern: String,
    pub max_message_bytes: Option<usize>,
    pub rate_per_sec: Option<u32>,
    pub rate_burst: Option<u32>,
    pub room_rate_per_sec: Option<u32>,
    pub rate_strikes: Option<u32>,
    pub history_limit: Option<u64>,
    pub history_ttl_secs: Option<u64>,
    pub max_connections_per_subject: Option<u32>,
    pub room_retire_ms: Option<u64>,
    pub room_shard_size: Option<u64>,
}

impl RoomPolicy {
    fn apply(&self, limits: &mut Limits) {
        let Limits {
            max_message_bytes,
            rate_per_sec,
            rate_burst,
            room_rate_per_sec,
            rate_strikes,
            history_limit,
            history_ttl_secs,
            max_connections_per_subject,
            room_retire_ms,
            room_shard_size,
            ..
        } = limits;
        set(max_message_bytes, self.max_message_bytes);
        set(rate_per_sec, self.rate_per_sec);
        set(rate_burst, self.rate_burst);
        set(room_rate_per_sec, self.room_rate_per_sec);
        set(rate_strikes, self.rate_strikes);
        set(history_limit, self.history_limit);
        set(history_ttl_secs, self.history_ttl_secs);
        set(
            max_connections_per_subject,
            self.max_connections_per_subject,
        );
        set(room_retire_ms, self.room_retire_ms);
        set(room_shard_size, self.room_shard_size);
    }
}

fn set<T: Copy>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// The worker's whole configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub defaults: Limits,
    pub policies: Vec<RoomPolicy>,
    /// Origins allowed to open WebSockets; empty means any.
    pub allowed_origins: Vec<String>,
    pub auth: VerifierConfig,
    /// Largest request body the worker reads.
    pub max_body_bytes: u64,
    /// A bridge relays this deployment (`BRIDGE = "on"`): every room is an
    /// outbox from its first message, not only once a bridge linked to it.
    pub bridge: bool,
    /// Whether a token may come in `?token=` (`QUERY_TOKENS`).
    pub query_tokens: QueryTokens,
}

/// `QUERY_TOKENS`: URLs end up in request logs, browser history and
/// `Referer` headers, so a deployment whose clients all send headers or
/// subprotocols can refuse tokens in them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QueryTokens {
    #[default]
    On,
    Off,
}

/// Default of `MAX_BODY_BYTES`.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 4 * 1024 * 1024;

/// A configuration variable with an unusable value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration variable {name}: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub reason: String,
}

impl Config {
    /// Reads every variable of docs/protocol.md, "Configuration" through `lookup`; absent or
    /// empty variables take their defaults.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let d = Limits::default();
        let defaults = Limits {
            max_message_bytes: number(&get, "MAX_MESSAGE_BYTES", d.max_message_bytes)?,
            rate_per_sec: number(&get, "RATE_PER_SEC", d.rate_per_sec)?,
            rate_burst: number(&get, "RATE_BURST", d.rate_burst)?,
            room_rate_per_sec: number(&get, "ROOM_RATE_PER_SEC", d.room_rate_per_sec)?,
            rate_strikes: number(&get, "RATE_STRIKES", d.rate_strikes)?,
            heartbeat_ms: number(&get, "HEARTBEAT_MS", d.heartbeat_ms)?,
            idle_timeout_ms: number(&get, "IDLE_TIMEOUT_MS", d.idle_timeout_ms)?,
            token_grace_ms: number(&get, "TOKEN_GRACE_MS", d.token_grace_ms)?,
            history_limit: number(&get, "HISTORY_LIMIT", d.history_limit)?,
            history_ttl_secs: number(&get, "HISTORY_TTL_SECS", d.history_ttl_secs)?,
            outbox_limit: number(&get, "OUTBOX_LIMIT", d.outbox_limit)?,
            max_connections_per_subject: number(
                &get,
                "MAX_CONNECTIONS_PER_SUBJECT",
                d.max_connections_per_subject,
            )?,
            room_retire_ms: number(&get, "ROOM_RETIRE_MS", d.room_retire_ms)?,
            room_shard_size: number(&get, "ROOM_SHARD_SIZE", d.room_shard_size)?,
        };
        let policies = match get("ROOM_POLICIES") {
            None => Vec::new(),
            Some(json) => serde_json::from_str(&json).map_err(|e| ConfigError {
                name: "ROOM_POLICIES",
                reason: format!("expected a JSON list of {{\"match\":\"pattern\", ...}}: {e}"),
            })?,
        };
        let allowed_origins = get("ALLOWED_ORIGINS")
            .map(|v| {
                v.split(',')
                    .map(|o| o.trim().trim_end_matches('/').to_owned())
                    .filter(|o| !o.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let auth = VerifierConfig {
            hs256_secret: get("JWT_SECRET"),
            jwks: get("JWT_PUBLIC_KEYS"),
            issuer: get("JWT_ISSUER"),
            audience: get("JWT_AUDIENCE"),
            leeway_secs: number(&get, "JWT_LEEWAY_SECS", 30)?,
        };
        let bridge = match get("BRIDGE").as_deref() {
            None | Some("off") => false,
            Some("on") => true,
            Some(other) => {
                return Err(ConfigError {
                    name: "BRIDGE",
                    reason: format!("{other:?} is neither \"on\" nor \"off\""),
                })
            }
        };
        let query_tokens = match get("QUERY_TOKENS").as_deref() {
            None | Some("on") => QueryTokens::On,
            Some("off") => QueryTokens::Off,
            Some(other) => {
                return Err(ConfigError {
                    name: "QUERY_TOKENS",
                    reason: format!("{other:?} is neither \"on\" nor \"off\""),
                })
            }
        };
        Ok(Config {
            defaults,
            policies,
            allowed_origins,
            auth,
            max_body_bytes: number(&get, "MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)?,
            bridge,
            query_tokens,
        })
    }

    /// The limits for `room`: the defaults with the first matching policy applied.
    pub fn limits_for(&self, room: &str) -> Limits {
        let mut limits = self.defaults.clone();
        if let Some(policy) = self
            .policies
            .iter()
            .find(|p| pattern_matches(&p.pattern, room))
        {
            policy.apply(&mut limits);
        }
        limits
    }

    /// Is a WebSocket from `origin` allowed? Requests without an `Origin`
    /// header come from non-browser clients, which the origin rule cannot
    /// protect against anyway, so they pass.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            _ if self.allowed_origins.is_empty() => true,
            None => true,
            Some(o) => self
                .allowed_origins
                .iter()
                .any(|a| a == "*" || a == o.trim_end_matches('/')),
        }
    }
}

fn number<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match get(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| ConfigError {
            name,
            reason: format!("{v:?} is not a non-negative integer"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_spec() {
        let c = config(&[]).unwrap();
        assert_eq!(c.defaults, Limits::default());
        assert_eq!(c.auth.leeway_secs, 30);
        assert!(c.origin_allowed(Some("https://evil.example")));
    }

    #[test]
    fn vars_override_and_bad_values_are_named() {
        let c = config(&[("RATE_PER_SEC", "5"), ("IDLE_TIMEOUT_MS", " 2000 ")]).unwrap();
        assert_eq!(
            (c.defaults.rate_per_sec, c.defaults.idle_timeout_ms),
            (5, 2000)
        );
        let err = config(&[("HISTORY_LIMIT", "lots")]).unwrap_err();
        assert_eq!(err.name, "HISTORY_LIMIT");
        assert_eq!(config(&[("BRIDGE", "yes")]).unwrap_err().name, "BRIDGE");
        assert!(config(&[("BRIDGE", "on")]).unwrap().bridge);
        assert_eq!(config(&[]).unwrap().max_body_bytes, 4 * 1024 * 1024);
    }

    #[test]
    fn query_tokens_are_on_unless_off() {
        assert_eq!(config(&[]).unwrap().query_tokens, QueryTokens::On);
        assert_eq!(
            config(&[("QUERY_TOKENS", "on")]).unwrap().query_tokens,
            QueryTokens::On
        );
        assert_eq!(
            config(&[("QUERY_TOKENS", " off ")]).unwrap().query_tokens,
            QueryTokens::Off
        );
        let err = config(&[("QUERY_TOKENS", "no")]).unwrap_err();
        assert_eq!(err.name, "QUERY_TOKENS");
        assert!(err.to_string().contains("QUERY_TOKENS"), "{err}");
    }

    #[test]
    fn first_matching_policy_wins() {
        let c = config(&[(
            "ROOM_POLICIES",
            r#"[{"match":"chat.*","rate_per_sec":2},{"match":"*","rate_per_sec":9,"history_limit":5}]"#,
        )])
        .unwrap();
        assert_eq!(c.limits_for("chat.a").rate_per_sec, 2);
        assert_eq!(c.limits_for("chat.a").history_limit, 1000);
        assert_eq!(c.limits_for("other").history_limit, 5);
        assert!(config(&[("ROOM_POLICIES", r#"[{"match":"a","nope":1}]"#)]).is_err());
    }

    #[test]
    fn origins() {
        let c = config(&[("ALLOWED_ORIGINS", "https://a.example, https://b.example/")]).unwrap();
        assert!(c.origin_allowed(Some("https://b.example")));
        assert!(!c.origin_allowed(Some("https://c.example")));
        assert!(c.origin_allowed(None));
    }
}
