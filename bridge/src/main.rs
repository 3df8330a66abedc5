//! `roomcast-bridge`: the sidecar that relays rooms to and from Kafka.
//! See the library's modules for the parts; this file only parses the
//! command line, prepares Kafka and handles signals.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use roomcast_bridge::cli::{Cli, Command, RunArgs, TokenArgs};
use roomcast_bridge::relay::{self, Bridge};
use roomcast_bridge::{embedded, kafka};
use roomcast_protocol::auth::{mint_hs256, TokenSpec};
use roomcast_protocol::clock::now_ms;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{error, info, warn};

/// How long startup waits for Kafka to create missing topics.
const TOPICS_TIMEOUT: Duration = Duration::from_secs(15);
/// Lifetime of the service token the bridge mints for itself from --jwt-secret.
const SELF_TOKEN_TTL_SECS: u64 = 365 * 86_400;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // A log sink that went away (a closed pipe) must not take the relay
        // down: reporting the failed write to that same stderr would panic.
        .log_internal_errors(false)
        .init();
    match cli.command {
        Some(Command::Token(args)) => mint(&cli.run, &args),
        None => match tokio::runtime::Runtime::new() {
            Ok(runtime) => runtime.block_on(run(cli.run)),
            Err(e) => {
                error!("starting the runtime: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn mint(run: &RunArgs, args: &TokenArgs) -> ExitCode {
    let Some(secret) = run.jwt_secret.as_deref().filter(|s| !s.is_empty()) else {
        eprintln!("roomcast-bridge token: --jwt-secret (or ROOMCAST_JWT_SECRET) is required");
        return ExitCode::from(2);
    };
    let spec = TokenSpec {
        sub: args.sub.clone(),
        rooms: args.rooms.clone(),
        publish: args.publish.clone(),
        role: args.bridge.then(|| "bridge".to_owned()),
        ttl_secs: args.ttl,
        ..TokenSpec::default()
    };
    println!("{}", mint_hs256(secret, &spec, now_ms()));
    ExitCode::SUCCESS
}

fn service_token(args: &RunArgs) -> Result<String, String> {
    if let Some(token) = args.token.as_deref().filter(|t| !t.is_empty()) {
        return Ok(token.to_owned());
    }
    let secret = args
        .jwt_secret
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or("either --token or --jwt-secret is required")?;
    let spec = TokenSpec {
        sub: "roomcast-bridge".into(),
        role: Some("bridge".into()),
        ttl_secs: SELF_TOKEN_TTL_SECS,
        ..TokenSpec::default()
    };
    Ok(mint_hs256(secret, &spec, now_ms()))
}

async fn run(args: RunArgs) -> ExitCode {
    match try_run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn try_run(args: RunArgs) -> Result<(), String> {
    let token = service_token(&args)?;
    let instance = args.instance_id.clone().unwrap_or_else(hostname);
    let topics = [
        args.events_topic.as_str(),
        args.inbound_topic.as_str(),
        args.dlq_topic.as_str(),
    ];
    // Kept alive until the bridge stops.
    let mut _embedded = None;
    let brokers = if args.embedded_kafka {
        let cluster = embedded::start(&topics).await?;
        warn!(
            "EMBEDDED KAFKA on {} (mock cluster at {}): for development only, nothing is persisted",
            embedded::ADDRESS,
            cluster.bootstrap
        );
        let brokers = cluster.bootstrap.clone();
        _embedded = Some(cluster);
        brokers
    } else {
        args.brokers.clone()
    };
    if !args.embedded_kafka {
        match tokio::time::timeout(TOPICS_TIMEOUT, kafka::ensure_topics(&brokers, &topics)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!("could not make sure the topics exist (continuing): {e}"),
            Err(_) => {
                warn!("Kafka did not answer topic creation within {TOPICS_TIMEOUT:?} (continuing)")
            }
        }
    }
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|e| format!("binding --metrics-addr {}: {e}", args.metrics_addr))?;
    let bridge = Arc::new(Bridge::new(&args, brokers, token, instance.clone())?);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    info!(instance, worker = args.worker_url, metrics = %args.metrics_addr, "bridge running");
    let running = tokio::spawn(relay::run(bridge, listener, stop_rx));
    tokio::select! {
        _ = terminate.recv() => info!("SIGTERM: draining"),
        _ = interrupt.recv() => info!("SIGINT: draining"),
    }
    let _ = stop_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(30), running).await {
        Ok(_) => Ok(()),
        Err(_) => Err("shutdown took longer than 30 s".into()),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "bridge".into())
}
