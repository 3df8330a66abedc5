//! Worker configuration (docs/protocol.md, "Configuration"), read from any
//! name → value lookup.
//!
//! The worker passes a closure over its `Env` (so `wrangler.toml` vars,
//! `.dev.vars` and `wrangler dev --var` all apply); tests pass a map. Bad
//! values are reported with the variable's name rather than silently
//! replaced by a default.

use serde::Deserialize;

use crate::auth::VerifierConfig;
use crate::mux::{DEFAULT_HUB_OBJECTS, DEFAULT_MAX_ROOMS_PER_CONNECTION};
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
    /// to the room's shards (docs/internals.md, "Sharding").
    pub room_shard_size: u64,
    /// Shortest time between two presence diffs (and occupancy frames) of a room.
    pub presence_interval_ms: u64,
    /// How long the presence of a connection dropped without a close
    /// lingers, waiting for its subject to come back; 0 = not at all.
    pub presence_grace_ms: u64,
    /// Members past which a room sends counts only, not who they are; 0 =
    /// counts only, always.
    pub presence_members_limit: u64,
}

/// Largest `MAX_MESSAGE_BYTES`: the runtime takes WebSocket messages of at
/// most 1 MiB, and a stored row must fit beside its other columns.
pub const MAX_MESSAGE_BYTES_LIMIT: usize = 1 << 20;

/// Shortest `JWT_SECRET`: an HS256 key is at least the hash's 256 bits
/// (RFC 7518, section 3.2); a shorter one can be searched for.
pub const MIN_SECRET_BYTES: usize = 32;

/// Default of `ROOM_CREATE_PER_MIN`.
pub const DEFAULT_ROOM_CREATE_PER_MIN: u32 = 60;

impl Limits {
    /// The first value that breaks an invariant, and why.
    fn problem(&self) -> Option<(&'static str, String)> {
        let at_least_one =
            |name, value: u64| (value == 0).then(|| (name, "must be at least 1".to_owned()));
        if self.max_message_bytes == 0 || self.max_message_bytes > MAX_MESSAGE_BYTES_LIMIT {
            return Some((
                "MAX_MESSAGE_BYTES",
                format!("must be 1 to {MAX_MESSAGE_BYTES_LIMIT} (the runtime's largest WebSocket message)"),
            ));
        }
        if self.idle_timeout_ms <= self.heartbeat_ms {
            return Some((
                "IDLE_TIMEOUT_MS",
                format!(
                    "must be longer than HEARTBEAT_MS ({} ms): a client that pings on time would be closed",
                    self.heartbeat_ms
                ),
            ));
        }
        at_least_one("RATE_PER_SEC", self.rate_per_sec.into())
            .or_else(|| at_least_one("RATE_BURST", self.rate_burst.into()))
            .or_else(|| at_least_one("ROOM_RATE_PER_SEC", self.room_rate_per_sec.into()))
            .or_else(|| at_least_one("RATE_STRIKES", self.rate_strikes.into()))
            .or_else(|| at_least_one("HEARTBEAT_MS", self.heartbeat_ms))
            .or_else(|| at_least_one("HISTORY_LIMIT", self.history_limit))
            .or_else(|| at_least_one("PRESENCE_INTERVAL_MS", self.presence_interval_ms))
            .or_else(|| {
                at_least_one(
                    "MAX_CONNECTIONS_PER_SUBJECT",
                    self.max_connections_per_subject.into(),
                )
            })
    }
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
            presence_interval_ms: 1000,
            presence_grace_ms: 5000,
            presence_members_limit: 1000,
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
    pub presence_members_limit: Option<u64>,
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
            presence_members_limit,
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
        set(presence_members_limit, self.presence_members_limit);
    }
}

fn set<T: Copy>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// The worker's whole configuration.
#[derive(Debug, Clone)]
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
    /// Rooms one subject may create per minute (as a bucket of that many,
    /// refilled over the minute); the bridge's token is not limited.
    pub room_create_per_min: u32,
    /// Whether a token may come in `?token=` (`QUERY_TOKENS`).
    pub query_tokens: QueryTokens,
    /// Rooms one multiplexed connection may be subscribed to at once
    /// (`MAX_ROOMS_PER_CONNECTION`).
    pub max_rooms_per_connection: usize,
    /// Hubs (Durable Objects) multiplexed connections are spread over
    /// (`HUB_OBJECTS`). Changing it moves new connections only: a
    /// connection stays on the hub it was placed on.
    pub hub_objects: u32,
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
            presence_interval_ms: number(&get, "PRESENCE_INTERVAL_MS", d.presence_interval_ms)?,
            presence_grace_ms: number(&get, "PRESENCE_GRACE_MS", d.presence_grace_ms)?,
            presence_members_limit: number(
                &get,
                "PRESENCE_MEMBERS_LIMIT",
                d.presence_members_limit,
            )?,
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
            bridge_kids: get("JWT_BRIDGE_KIDS")
                .map(|v| {
                    v.split(',')
                        .map(|k| k.trim().to_owned())
                        .filter(|k| !k.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            bridge_issuer: get("JWT_BRIDGE_ISSUER"),
        };
        if auth
            .hs256_secret
            .as_ref()
            .is_some_and(|s| s.len() < MIN_SECRET_BYTES)
        {
            return Err(ConfigError {
                name: "JWT_SECRET",
                reason: format!(
                    "an HS256 secret needs at least {MIN_SECRET_BYTES} bytes (e.g. `head -c 32 /dev/urandom | base64`)"
                ),
            });
        }
        let bridge = switch(&get, "BRIDGE", false)?;
        let config = Config {
            defaults,
            policies,
            allowed_origins,
            auth,
            max_body_bytes: number(&get, "MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)?,
            bridge,
            room_create_per_min: number(&get, "ROOM_CREATE_PER_MIN", DEFAULT_ROOM_CREATE_PER_MIN)?,
            query_tokens: if switch(&get, "QUERY_TOKENS", true)? {
                QueryTokens::On
            } else {
                QueryTokens::Off
            },
            max_rooms_per_connection: number(
                &get,
                "MAX_ROOMS_PER_CONNECTION",
                DEFAULT_MAX_ROOMS_PER_CONNECTION,
            )?,
            hub_objects: number(&get, "HUB_OBJECTS", DEFAULT_HUB_OBJECTS)?,
        };
        config.check()?;
        Ok(config)
    }

    /// Refuses values that would break what the rest of roomcast relies on,
    /// in the defaults and in every room policy, naming the variable (and
    /// the policy).
    fn check(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("ROOM_CREATE_PER_MIN", u64::from(self.room_create_per_min)),
            (
                "MAX_ROOMS_PER_CONNECTION",
                self.max_rooms_per_connection as u64,
            ),
            ("HUB_OBJECTS", u64::from(self.hub_objects)),
        ] {
            if value == 0 {
                return Err(ConfigError {
                    name,
                    reason: "must be at least 1".into(),
                });
            }
        }
        let policies = self.policies.iter().map(|p| {
            let mut limits = self.defaults.clone();
            p.apply(&mut limits);
            (
                format!(" (in the ROOM_POLICIES entry for {:?})", p.pattern),
                limits,
            )
        });
        for (policy, limits) in
            std::iter::once((String::new(), self.defaults.clone())).chain(policies)
        {
            if let Some((name, reason)) = limits.problem() {
                return Err(ConfigError {
                    name,
                    reason: format!("{reason}{policy}"),
                });
            }
        }
        Ok(())
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

/// An `on`/`off` variable, `default` when absent.
fn switch(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    match get(name).as_deref() {
        None => Ok(default),
        Some("on") => Ok(true),
        Some("off") => Ok(false),
        Some(other) => Err(ConfigError {
            name,
            reason: format!("{other:?} is neither \"on\" nor \"off\""),
        }),
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
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

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
        let c = config(&[
            ("RATE_PER_SEC", "5"),
            ("IDLE_TIMEOUT_MS", " 2000 "),
            ("HEARTBEAT_MS", "1000"),
        ])
        .unwrap();
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
    fn values_that_break_an_invariant_are_refused_by_name() {
        for (vars, name) in [
            (&[("MAX_MESSAGE_BYTES", "2000000")][..], "MAX_MESSAGE_BYTES"),
            (&[("MAX_MESSAGE_BYTES", "0")][..], "MAX_MESSAGE_BYTES"),
            (&[("RATE_BURST", "0")][..], "RATE_BURST"),
            (&[("RATE_PER_SEC", "0")][..], "RATE_PER_SEC"),
            (&[("HEARTBEAT_MS", "0")][..], "HEARTBEAT_MS"),
            (&[("HEARTBEAT_MS", "90000")][..], "IDLE_TIMEOUT_MS"),
            (&[("HISTORY_LIMIT", "0")][..], "HISTORY_LIMIT"),
            (&[("PRESENCE_INTERVAL_MS", "0")][..], "PRESENCE_INTERVAL_MS"),
            (&[("PRESENCE_GRACE_MS", "-1")][..], "PRESENCE_GRACE_MS"),
            (
                &[("PRESENCE_MEMBERS_LIMIT", "many")][..],
                "PRESENCE_MEMBERS_LIMIT",
            ),
            (&[("JWT_SECRET", "short")][..], "JWT_SECRET"),
            (&[("ROOM_CREATE_PER_MIN", "0")][..], "ROOM_CREATE_PER_MIN"),
            (
                &[("MAX_ROOMS_PER_CONNECTION", "0")][..],
                "MAX_ROOMS_PER_CONNECTION",
            ),
            (&[("HUB_OBJECTS", "0")][..], "HUB_OBJECTS"),
            (&[("HUB_OBJECTS", "many")][..], "HUB_OBJECTS"),
            (
                &[(
                    "ROOM_POLICIES",
                    r#"[{"match":"big.*","max_message_bytes":5000000}]"#,
                )][..],
                "MAX_MESSAGE_BYTES",
            ),
        ] {
            let err = config(vars).unwrap_err();
            assert_eq!(err.name, name, "{vars:?}: {err}");
        }
        let err = config(&[("ROOM_POLICIES", r#"[{"match":"b.*","rate_burst":0}]"#)]).unwrap_err();
        assert!(err.to_string().contains("\"b.*\""), "{err}");
        assert!(config(&[("JWT_SECRET", &"k".repeat(MIN_SECRET_BYTES))]).is_ok());
        assert!(config(&[
            ("MAX_MESSAGE_BYTES", "1048576"),
            ("HEARTBEAT_MS", "500"),
            ("IDLE_TIMEOUT_MS", "1500")
        ])
        .is_ok());
    }

    #[test]
    fn presence_settings() {
        let d = config(&[]).unwrap().defaults;
        assert_eq!(
            (
                d.presence_interval_ms,
                d.presence_grace_ms,
                d.presence_members_limit
            ),
            (1000, 5000, 1000)
        );
        let c = config(&[
            ("PRESENCE_INTERVAL_MS", "250"),
            ("PRESENCE_GRACE_MS", "0"),
            ("PRESENCE_MEMBERS_LIMIT", "0"),
        ])
        .unwrap();
        assert_eq!(
            (
                c.defaults.presence_interval_ms,
                c.defaults.presence_grace_ms,
                c.defaults.presence_members_limit
            ),
            (250, 0, 0),
            "no grace and counts only are settings, not mistakes"
        );
        let err = config(&[("PRESENCE_INTERVAL_MS", "0")]).unwrap_err();
        assert!(err.to_string().contains("at least 1"), "{err}");
    }

    #[test]
    fn the_members_limit_is_a_room_policy() {
        let c = config(&[(
            "ROOM_POLICIES",
            r#"[{"match":"stage.*","presence_members_limit":50000},{"match":"quiet.*","presence_members_limit":0}]"#,
        )])
        .unwrap();
        assert_eq!(c.limits_for("stage.main").presence_members_limit, 50_000);
        assert_eq!(c.limits_for("quiet.a").presence_members_limit, 0);
        assert_eq!(c.limits_for("other").presence_members_limit, 1000);
        assert!(
            config(&[(
                "ROOM_POLICIES",
                r#"[{"match":"a","presence_interval_ms":5}]"#
            )])
            .is_err(),
            "the interval is one setting for the deployment"
        );
    }

    #[test]
    fn multiplexing_settings() {
        let c = config(&[]).unwrap();
        assert_eq!(
            (c.max_rooms_per_connection, c.hub_objects),
            (DEFAULT_MAX_ROOMS_PER_CONNECTION, DEFAULT_HUB_OBJECTS)
        );
        let c = config(&[("MAX_ROOMS_PER_CONNECTION", "3"), ("HUB_OBJECTS", "2")]).unwrap();
        assert_eq!((c.max_rooms_per_connection, c.hub_objects), (3, 2));
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
