//! The bridge's command line (SPEC section 8). Every flag can also be set by
//! an environment variable `ROOMCAST_<NAME>`, which is how container and
//! systemd deployments configure it.

use std::net::SocketAddr;

use clap::{Args as ClapArgs, Parser, Subcommand};

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
    /// Lifetime: seconds, or with a unit `s`, `m`, `h`, `d` (e.g. `1h`).
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: u64,
    /// Mint the bridge's service token (`role: "bridge"`).
    #[arg(long)]
    pub bridge: bool,
}

#[derive(ClapArgs, Debug, Clone)]
pub struct RunArgs {
    /// Base URL of the roomcast worker (`http(s)://` or `ws(s)://`).
    #[arg(
        long,
        env = "ROOMCAST_WORKER_URL",
        default_value = "http://127.0.0.1:8787"
    )]
    pub worker_url: String,

    /// The bridge's service token (a JWT with `role: "bridge"`).
    #[arg(long, env = "ROOMCAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// The worker's HS256 secret: the bridge mints its own service token
    /// from it (and `token` mints dev tokens).
    #[arg(long, env = "ROOMCAST_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Kafka bootstrap servers, comma-separated.
    #[arg(long, env = "ROOMCAST_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,

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

    /// Dead-letter topic for inbound records that cannot be delivered.
    #[arg(long, env = "ROOMCAST_DLQ_TOPIC", default_value = "roomcast.dlq")]
    pub dlq_topic: String,

    /// Consumer group of the inbound consumer.
    #[arg(long, env = "ROOMCAST_GROUP_ID", default_value = "roomcast-bridge")]
    pub group_id: String,

    /// Where `/metrics` and `/healthz` are served.
    #[arg(long, env = "ROOMCAST_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,

    /// This instance's id among several bridges (default: the hostname). It
    /// is also the Kafka static group member id, so keep it stable across
    /// restarts, and unique per instance.
    #[arg(long, env = "ROOMCAST_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Largest inbound record value published into a room; larger ones go to
    /// the dead-letter topic. Match the worker's MAX_MESSAGE_BYTES.
    #[arg(long, env = "ROOMCAST_MAX_MESSAGE_BYTES", default_value_t = 65_536)]
    pub max_message_bytes: usize,
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
    }

    #[test]
    fn defaults_match_the_spec() {
        let cli = Cli::parse_from(["roomcast-bridge"]);
        assert_eq!(cli.run.events_topic, "roomcast.events");
        assert_eq!(cli.run.inbound_topic, "roomcast.inbound");
        assert_eq!(cli.run.dlq_topic, "roomcast.dlq");
        assert_eq!(cli.run.group_id, "roomcast-bridge");
        assert_eq!(cli.run.metrics_addr.to_string(), "127.0.0.1:9464");
    }
}
