//! The bridge's command line (docs/bridge.md, "Flags and environment"). Every flag can also be set by
//! an environment variable `ROOMCAST_<NAME>`, which is how container and
//! systemd deployments configure it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgGroup, Args as ClapArgs, Parser, Subcommand};

use crate::amqp::AmqpUrl;
use crate::broker::BrokerKind;
use crate::token::MAX_TTL_SECS;

/// roomcast-bridge relays every room's messages to Kafka (or RabbitMQ) and
/// its records back into rooms, at least once, with dead letters and
/// Prometheus metrics.
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
    /// Room patterns where it appears as a member and sees the members
    /// (presence), comma-separated; none unless given.
    #[arg(long, value_delimiter = ',')]
    pub presence: Vec<String>,
    /// What each of its connections shows as a member: JSON, at most 1 KiB.
    #[arg(long, value_parser = parse_info)]
    pub info: Option<serde_json::Value>,
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
    /// Cleartext (`http://`, `ws://`) only to loopback, unless
    /// --allow-cleartext.
    #[arg(
        long,
        env = "ROOMCAST_WORKER_URL",
        default_value = "http://127.0.0.1:8787"
    )]
    pub worker_url: String,

    /// Allow an `http://` or `ws://` --worker-url to a host that is not
    /// loopback. Tokens and messages then cross the network unencrypted:
    /// only for a private network you trust.
    #[arg(long, env = "ROOMCAST_ALLOW_CLEARTEXT")]
    pub allow_cleartext: bool,

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

    /// The broker rooms are relayed to and from: `kafka` (the --brokers,
    /// --kafka-* and topic flags) or `amqp`, RabbitMQ (the --amqp-* flags).
    #[arg(long, env = "ROOMCAST_BROKER", default_value = "kafka", value_parser = parse_broker)]
    pub broker: BrokerKind,

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

    /// Topic that receives every room's presence events (key = room name);
    /// empty: presence events are acknowledged to rooms and not written.
    #[arg(
        long,
        env = "ROOMCAST_PRESENCE_TOPIC",
        default_value = "roomcast.presence"
    )]
    pub presence_topic: String,

    /// Consumer group of the inbound consumer.
    #[arg(long, env = "ROOMCAST_GROUP_ID", default_value = "roomcast-bridge")]
    pub group_id: String,

    /// RabbitMQ's URL (`--broker amqp`): `amqp://` or `amqps://` (TLS, with
    /// the platform's roots and --ca-file), user, host, port and vhost
    /// (`%2f` for `/`), e.g. `amqps://bridge@rabbit:5671/roomcast`. Its
    /// password never appears in logs or `/healthz`; prefer
    /// --amqp-password-file to keep it out of the URL.
    #[arg(
        long,
        env = "ROOMCAST_AMQP_URL",
        hide_env_values = true,
        default_value = "amqp://127.0.0.1:5672/%2f"
    )]
    pub amqp_url: AmqpUrl,

    /// A file whose first line is the password of --amqp-url's user, in
    /// place of any password in the URL.
    #[arg(long, env = "ROOMCAST_AMQP_PASSWORD_FILE")]
    pub amqp_password_file: Option<PathBuf>,

    /// Durable topic exchange that receives every room message (routing
    /// key = room name).
    #[arg(
        long,
        env = "ROOMCAST_AMQP_EVENTS_EXCHANGE",
        default_value = "roomcast.events"
    )]
    pub amqp_events_exchange: String,

    /// Durable topic exchange that receives every room's presence events
    /// (routing key = room name); empty: presence events are acknowledged
    /// to rooms and not published.
    #[arg(
        long,
        env = "ROOMCAST_AMQP_PRESENCE_EXCHANGE",
        default_value = "roomcast.presence"
    )]
    pub amqp_presence_exchange: String,

    /// Durable quorum queue whose messages are published into rooms; a
    /// topic exchange of the same name is bound to it with `#`.
    #[arg(
        long,
        env = "ROOMCAST_AMQP_INBOUND_QUEUE",
        default_value = "roomcast.inbound"
    )]
    pub amqp_inbound_queue: String,

    /// Durable fanout exchange for what cannot be delivered, either way
    /// (also the inbound queue's `x-dead-letter-exchange`).
    #[arg(
        long,
        env = "ROOMCAST_AMQP_DEAD_LETTER_EXCHANGE",
        default_value = "roomcast.dlx"
    )]
    pub amqp_dead_letter_exchange: String,

    /// Durable quorum queue bound to the dead-letter exchange.
    #[arg(
        long,
        env = "ROOMCAST_AMQP_DEAD_LETTER_QUEUE",
        default_value = "roomcast.dlq"
    )]
    pub amqp_dead_letter_queue: String,

    /// Inbound deliveries held unacknowledged at once (basic.qos prefetch):
    /// acks follow the oldest record not yet in its room, so this is also
    /// how far other rooms run ahead of a room that keeps failing.
    #[arg(long, env = "ROOMCAST_AMQP_PREFETCH", default_value = "1000",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub amqp_prefetch: u16,

    /// Where `/metrics` and `/healthz` are served. Loopback by default: put
    /// a scraper next to the bridge, or bind a private address deliberately.
    #[arg(long, env = "ROOMCAST_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,

    /// The most room links this instance holds (or is opening) at once.
    /// Rooms announced beyond it wait, those with messages pending first,
    /// and get a link when one ends.
    #[arg(long, env = "ROOMCAST_MAX_LINKS", default_value = "10000",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_links: u32,

    /// A room link with nothing in flight that received no message for this
    /// long is closed (seconds, or with a unit `s`, `m`, `h`; at most a
    /// day); the room's next message brings it back.
    #[arg(long, env = "ROOMCAST_LINK_IDLE", default_value = "60s", value_parser = parse_link_idle)]
    pub link_idle: u64,

    /// Room link opens per second, first opens and reconnects alike, so
    /// that thousands of rooms handed over at once are linked gradually.
    #[arg(long, env = "ROOMCAST_LINK_OPENS_PER_SEC", default_value = "50",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub link_opens_per_sec: u32,

    /// Room message bytes handed to Kafka and not yet confirmed, across all
    /// links (bytes, or with a unit `KiB`, `MiB`, `GiB`; under 4 GiB). A link
    /// that finds no room stops reading until some is released; the room
    /// holds the rest.
    #[arg(long, env = "ROOMCAST_MAX_IN_FLIGHT_BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    pub max_in_flight_bytes: u32,

    /// This instance's id among several bridges (default: the hostname). It
    /// is also the Kafka static group member id, so keep it stable across
    /// restarts, and unique per instance.
    #[arg(long, env = "ROOMCAST_INSTANCE_ID")]
    pub instance_id: Option<String>,
}

/// `kafka` or `amqp`.
fn parse_broker(text: &str) -> Result<BrokerKind, String> {
    match text {
        "kafka" => Ok(BrokerKind::Kafka),
        "amqp" => Ok(BrokerKind::Amqp),
        other => Err(format!("{other:?} is no broker; use kafka or amqp")),
    }
}

/// A token lifetime: a duration of at most a day.
fn parse_info(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|e| format!("--info is JSON: {e}"))
}

fn parse_token_ttl(text: &str) -> Result<u64, String> {
    match parse_ttl(text)? {
        0 => Err("a token must live at least a second".into()),
        secs if secs > MAX_TTL_SECS => Err(format!(
            "{text} is longer than a day; the bridge never makes tokens that long"
        )),
        secs => Ok(secs),
    }
}

/// How long an idle room link stays open: a second to a day (a day already
/// means "never" for a room link, and keeps deadlines far from overflow).
fn parse_link_idle(text: &str) -> Result<u64, String> {
    match parse_ttl(text)? {
        0 => Err("an idle link must be kept at least a second".into()),
        secs if secs > MAX_TTL_SECS => Err(format!(
            "{text} is longer than a day; an idle link is never kept that long"
        )),
        secs => Ok(secs),
    }
}

/// Parses `1048576`, `512KiB`, `64MiB`, `1GiB` into bytes, short of 4 GiB
/// (the unit of the in-flight semaphore is a `u32`).
fn parse_bytes(text: &str) -> Result<u32, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 1048576, 512KiB or 64MiB"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?}; use KiB, MiB or GiB")),
    };
    match n.checked_mul(scale).map(u32::try_from) {
        Some(Ok(0)) => Err("the bound must be at least one byte".into()),
        Some(Ok(bytes)) => Ok(bytes),
        _ => Err(format!(
            "{text} is 4 GiB or more; the bound must be below it"
        )),
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
        assert_eq!(cli.run.presence_topic, "roomcast.presence");
        assert_eq!(cli.run.group_id, "roomcast-bridge");
        assert_eq!(cli.run.metrics_addr.to_string(), "127.0.0.1:9464");
        assert!(cli.run.metrics_addr.ip().is_loopback());
        assert_eq!(cli.run.max_links, 10_000);
        assert_eq!(cli.run.link_idle, 60);
        assert_eq!(cli.run.link_opens_per_sec, 50);
        assert_eq!(cli.run.max_in_flight_bytes, 64 << 20);
        assert!(!cli.run.allow_cleartext);
        assert_eq!(cli.run.broker, BrokerKind::Kafka);
        assert_eq!(cli.run.amqp_events_exchange, "roomcast.events");
        assert_eq!(cli.run.amqp_inbound_queue, "roomcast.inbound");
        assert_eq!(cli.run.amqp_dead_letter_exchange, "roomcast.dlx");
        assert_eq!(cli.run.amqp_dead_letter_queue, "roomcast.dlq");
        assert_eq!(cli.run.amqp_presence_exchange, "roomcast.presence");
        assert_eq!(cli.run.amqp_prefetch, 1000);
        assert_eq!(cli.run.amqp_url.to_string(), "amqp://127.0.0.1:5672/%2f");
    }

    #[test]
    fn presence_can_be_turned_off() {
        let cli = Cli::parse_from([
            "roomcast-bridge",
            "--presence-topic",
            "",
            "--amqp-presence-exchange",
            "",
        ]);
        assert_eq!(cli.run.presence_topic, "");
        assert_eq!(cli.run.amqp_presence_exchange, "");
    }

    #[test]
    fn amqp_flags() {
        let secret = "pw-never-printed";
        let url = format!("amqps://bridge:{secret}@rabbit:5671/roomcast");
        let cli = Cli::try_parse_from([
            "roomcast-bridge",
            "--broker",
            "amqp",
            "--amqp-url",
            &url,
            "--amqp-prefetch",
            "50",
            "--amqp-inbound-queue",
            "in",
        ])
        .unwrap();
        assert_eq!(cli.run.broker, BrokerKind::Amqp);
        assert_eq!(cli.run.amqp_prefetch, 50);
        assert_eq!(cli.run.amqp_inbound_queue, "in");
        // The parsed arguments may be logged whole: the password is not in them.
        assert!(!format!("{cli:?}").contains(secret), "{cli:?}");
        assert!(Cli::try_parse_from(["roomcast-bridge", "--broker", "rabbit"]).is_err());
        assert!(Cli::try_parse_from(["roomcast-bridge", "--amqp-prefetch", "0"]).is_err());
        assert!(Cli::try_parse_from(["roomcast-bridge", "--amqp-url", "rabbit:5672"]).is_err());
    }

    #[test]
    fn link_bounds() {
        assert_eq!(parse_link_idle("2m"), Ok(120));
        assert!(parse_link_idle("0").is_err());
        assert!(parse_link_idle("2d").is_err());
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("512KiB"), Ok(512 << 10));
        assert_eq!(parse_bytes("3GiB"), Ok(3 << 30));
        assert!(parse_bytes("4GiB").is_err());
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("64MB").is_err());
        assert!(parse_bytes("MiB").is_err());
        assert!(Cli::try_parse_from(["roomcast-bridge", "--max-links", "0"]).is_err());
        assert!(Cli::try_parse_from(["roomcast-bridge", "--link-opens-per-sec", "0"]).is_err());
        let cli = Cli::try_parse_from([
            "roomcast-bridge",
            "--max-links",
            "3",
            "--link-idle",
            "5s",
            "--max-in-flight-bytes",
            "1KiB",
            "--allow-cleartext",
        ])
        .unwrap();
        assert_eq!(
            (
                cli.run.max_links,
                cli.run.link_idle,
                cli.run.max_in_flight_bytes,
                cli.run.allow_cleartext
            ),
            (3, 5, 1024, true)
        );
    }
}
