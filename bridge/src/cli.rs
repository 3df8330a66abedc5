//! The bridge's command line (docs/protocol.md, "Configuration"). Every flag can also be set by
//! an environment variable `ROOMCAST_<NAME>`, which is how container and
//! systemd deployments configure it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgGroup, Args as ClapArgs, Parser, Subcommand};

use crate::token::MAX_TTL_SECS;

/// roomcast-bridge relays every room's messages to Kafka and Kafka records
/// back into rooms, at least once, with a dead-letter topic and Prometheus
/// metrics.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
pub struct Cli {
    #[command(flatten)]
    pub run: RunArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Mint an HS256 token from --jwt-secret, for local use.
    Token(TokenArgs),
    /// Print the public half of --jwt-key-file as a JWKS, for the worker's
    /// JWT_PUBLIC_KEYS.
    Jwks,
}

#[derive(ClapArgs, Debug, Clone)]
pub struct TokenArgs {
    /// The token's subject (`sub`), shown as the sender of its messages.
    #[arg(long)]
    pub sub: String,
    /// Room patterns it may subscribe to (`chat.*`, `*`), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub rooms: Vec<String>,
    /// Room patterns it may publish to, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub publish: Vec<String>,
    /// Lifetime: seconds, or with a unit `s`, `m`, `h`, `d` (e.g. `1h`); at most a day.
    #[arg(long, default_value = "1h", value_parser = parse_token_ttl)]
    pub ttl: u64,
    /// Mint the bridge's service token (`role: "bridge"`).
    #[arg(long)]
    pub bridge: bool,
}

#[derive(ClapArgs, Debug, Clone)]
#[command(group(ArgGroup::new("credentials").args(["token", "token_file", "jwt_secret", "jwt_key_file"])))]
pub struct RunArgs {
    /// Base URL of the roomcast worker (`http(s)://` or `ws(s)://`).
    #[arg(
        long,
        env = "ROOMCAST_WORKER_URL",
        default_value = "http://127.0.0.1:8787"
    )]
    pub worker_url: String,

    /// Extra trusted CA certificates (PEM) for https:// worker URLs, on top
    /// of the platform's roots (SSL_CERT_FILE and SSL_CERT_DIR apply): a
    /// private CA, or a local development certificate.
    #[arg(long, env = "ROOMCAST_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// The worker's HS256 secret: the bridge mints its own short-lived
    /// service tokens from it (and `token` mints dev tokens).
    #[arg(
        long,
        env = "ROOMCAST_JWT_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub jwt_secret: Option<String>,

    /// A private key (Ed25519 or P-256, PEM) the bridge mints its own
    /// short-lived service tokens with; the worker then holds only the
    /// public half in JWT_PUBLIC_KEYS (print it with `jwks`).
    #[arg(long, env = "ROOMCAST_JWT_KEY_FILE", global = true)]
    pub jwt_key_file: Option<PathBuf>,

    /// The `kid` of --jwt-key-file, as named in the worker's JWKS.
    #[arg(long, env = "ROOMCAST_JWT_KID", global = true)]
    pub jwt_kid: Option<String>,

    /// The `iss` of minted tokens (match the worker's JWT_ISSUER).
    #[arg(long, env = "ROOMCAST_JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,

    /// The `aud` of minted tokens (match the worker's JWT_AUDIENCE).
    #[arg(long, env = "ROOMCAST_JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,

    /// Lifetime of each minted token (at most 1d); a fresh one replaces it
    /// over the open links when two thirds of it have passed.
    #[arg(long, env = "ROOMCAST_TOKEN_TTL", default_value = "15m", value_parser = parse_token_ttl)]
    pub token_ttl: u64,

    /// A file holding the bridge's token, issued by something else; read
    /// again whenever it changes.
    #[arg(long, env = "ROOMCAST_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// A fixed service token (a JWT with `role: "bridge"`). It cannot be
    /// refreshed: prefer the options above outside development.
    #[arg(long, env = "ROOMCAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Kafka bootstrap servers, comma-separated.
    #[arg(long, env = "ROOMCAST_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,

    /// A librdkafka property for every Kafka client (producer, consumer,
    /// admin), `KEY=VALUE`, repeatable; applied after --kafka-config-file.
    /// TLS and SASL go here (`security.protocol=SASL_SSL`, ...). The bridge's
    /// defaults can be changed this way, e.g. the producer's
    /// `compression.type=lz4` (kafkajs needs an LZ4 codec to read it; use
    /// `gzip` or `none` for consumers without one). Secret values never
    /// appear in logs.
    #[arg(long = "kafka-config", value_name = "KEY=VALUE")]
    pub kafka_config: Vec<String>,

    /// A Java-properties file of librdkafka properties (`key=value` lines),
    /// the same for every Kafka client; see --kafka-config.
    #[arg(long, env = "ROOMCAST_KAFKA_CONFIG_FILE")]
    pub kafka_config_file: Option<PathBuf>,

    /// Start an in-process Kafka-protocol broker (librdkafka's mock cluster)
    /// for local runs. For development only: it keeps nothing on disk.
    #[arg(long, env = "ROOMCAST_EMBEDDED_KAFKA")]
    pub embedded_kafka: bool,

    /// Topic that receives every room message.
    #[arg(long, env = "ROOMCAST_EVENTS_TOPIC", default_value = "roomcast.events")]
    pub events_topic: String,

    /// Topic whose records are published into rooms (key = room name).
    #[arg(
        long,
        env = "ROOMCAST_INBOUND_TOPIC",
        default_value = "roomcast.inbound"
    )]
    pub inbound_topic: String,

    /// Dead-letter topic for what cannot be delivered, either way.
    #[arg(long, env = "ROOMCAST_DLQ_TOPIC", default_value = "roomcast.dlq")]
    pub dlq_topic: String,

    /// Consumer group of the inbound consumer.
    #[arg(long, env = "ROOMCAST_GROUP_ID", default_value = "roomcast-bridge")]
    pub group_id: String,

    /// Where `/metrics` and `/healthz` are served. Loopback by default: put
    /// a scraper next to the bridge, or bind a private address deliberately.
    #[arg(long, env = "ROOMCAST_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,

    /// This instance's id among several bridges (default: the hostname). It
    /// is also the Kafka static group member id, so keep it stable across
    /// restarts, and unique per instance.
    #[arg(long, env = "ROOMCAST_INSTANCE_ID")]
    pub instance_id: Option<String>,
}

/// A token lifetime: a duration of at most a day.
fn parse_token_ttl(text: &str) -> Result<u64, String> {
    match parse_ttl(text)? {
        0 => Err("a token must live at least a second".into()),
        secs if secs > MAX_TTL_SECS => Err(format!(
            "{text} is longer than a day; the bridge never makes tokens that long"
        )),
        secs => Ok(secs),
    }
}

/// Parses `90`, `15m`, `1h`, `2d` into seconds.
pub fn parse_ttl(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90, 15m or 1h"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("unknown duration unit {other:?}; use s, m, h or d")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
        assert_eq!(parse_token_ttl("15m"), Ok(900));
        assert!(parse_token_ttl("2d").is_err());
        assert!(parse_token_ttl("0").is_err());
    }

    #[test]
    fn one_source_of_credentials() {
        assert!(
            Cli::try_parse_from(["roomcast-bridge", "--jwt-secret", "s", "--token", "t"]).is_err()
        );
        let cli = Cli::try_parse_from([
            "roomcast-bridge",
            "--jwt-key-file",
            "k.pem",
            "--kafka-config",
            "security.protocol=ssl",
            "--kafka-config",
            "ssl.ca.location=/ca.pem",
        ])
        .unwrap();
        assert_eq!(cli.run.kafka_config.len(), 2);
        assert_eq!(cli.run.token_ttl, 900);
    }

    #[test]
    fn defaults_match_the_spec() {
        let cli = Cli::parse_from(["roomcast-bridge"]);
        assert_eq!(cli.run.events_topic, "roomcast.events");
        assert_eq!(cli.run.inbound_topic, "roomcast.inbound");
        assert_eq!(cli.run.dlq_topic, "roomcast.dlq");
        assert_eq!(cli.run.group_id, "roomcast-bridge");
        assert_eq!(cli.run.metrics_addr.to_string(), "127.0.0.1:9464");
        assert!(cli.run.metrics_addr.ip().is_loopback());
    }
}
