//! `roomcast-bridge`: relays room messages to Kafka and Kafka records into rooms.
//!
//! Only the command-line surface exists so far; the relay itself lands with the
//! Kafka bridge issue (SPEC sections 5-7).

use clap::Parser;

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
}

fn main() {
    let args = Args::parse();
    eprintln!(
        "roomcast-bridge: the relay is not built yet (worker at {}); see --help",
        args.worker_url
    );
    std::process::exit(2);
}
