//! `roomcast-bridge`: relays room messages to Kafka and Kafka records into rooms.
//!
//! The relay itself lands with the Kafka bridge issue (SPEC sections 5-7);
//! what exists now is the `token` subcommand, which mints development tokens
//! from the worker's HS256 secret.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use roomcast_protocol::auth::{mint_hs256, TokenSpec};
use roomcast_protocol::clock::now_ms;

/// Kafka <-> roomcast rooms relay (SPEC sections 5-7).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Base URL of the roomcast worker (`http(s)://` or `ws(s)://`).
    #[arg(
        long,
        env = "ROOMCAST_WORKER_URL",
        default_value = "http://127.0.0.1:8787"
    )]
    worker_url: String,

    /// The worker's HS256 secret (`JWT_SECRET`), to mint tokens.
    #[arg(long, env = "ROOMCAST_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Mint an HS256 token from --jwt-secret, for local use.
    Token {
        /// The token's subject (`sub`), shown as the sender of its messages.
        #[arg(long)]
        sub: String,
        /// Room patterns it may subscribe to (`chat.*`, `*`), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "*")]
        rooms: Vec<String>,
        /// Room patterns it may publish to, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "*")]
        publish: Vec<String>,
        /// Lifetime: seconds, or with a unit `s`, `m`, `h`, `d` (e.g. `1h`).
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: u64,
        /// Mint the bridge's service token (`role: "bridge"`).
        #[arg(long)]
        bridge: bool,
    },
}

fn parse_ttl(text: &str) -> Result<u64, String> {
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
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

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Some(Command::Token {
            sub,
            rooms,
            publish,
            ttl,
            bridge,
        }) => {
            let Some(secret) = args.jwt_secret.filter(|s| !s.is_empty()) else {
                eprintln!(
                    "roomcast-bridge token: --jwt-secret (or ROOMCAST_JWT_SECRET) is required"
                );
                return ExitCode::from(2);
            };
            let role = bridge.then(|| "bridge".to_owned());
            let spec = TokenSpec {
                sub,
                rooms,
                publish,
                role,
                ttl_secs: ttl,
                ..TokenSpec::default()
            };
            println!("{}", mint_hs256(&secret, &spec, now_ms()));
            ExitCode::SUCCESS
        }
        None => {
            eprintln!(
                "roomcast-bridge: the Kafka relay is not built yet (worker at {}); see --help",
                args.worker_url
            );
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
