//! `roomcast-bridge`: the sidecar that relays rooms to and from Kafka.
//! This file only parses the command line, sets up logging and hands over
//! to the supervisor (or runs a small subcommand).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use roomcast_bridge::cli::{Cli, Command, RunArgs, TokenArgs};
use roomcast_bridge::supervisor;
use roomcast_protocol::clock::now_ms;
use roomcast_protocol::signing::{mint_hs256, TokenSpec};
use tracing::error;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: journald and log files get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        // A log sink that went away (a closed pipe) must not take the relay
        // down: reporting the failed write to that same stderr would panic.
        .log_internal_errors(false)
        .init();
    match cli.command {
        Some(Command::Token(args)) => mint(&cli.run, &args),
        Some(Command::Jwks) => jwks(&cli.run),
        None => match tokio::runtime::Runtime::new() {
            Ok(runtime) => {
                let outcome = runtime.block_on(supervisor::run(cli.run));
                // The drain has had its bound. A task still inside the Kafka
                // client (a synchronous commit to a broker that stopped
                // answering never returns) would hold a plain drop of the
                // runtime, and the exit, for as long as the broker stays away.
                runtime.shutdown_background();
                match outcome {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        error!("{e}");
                        ExitCode::FAILURE
                    }
                }
            }
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
        presence: args.presence.clone(),
        info: args.info.clone(),
        role: args.bridge.then(|| "bridge".to_owned()),
        iss: run.jwt_issuer.clone(),
        aud: run.jwt_audience.clone(),
        ttl_secs: args.ttl,
        ..TokenSpec::default()
    };
    println!("{}", mint_hs256(secret, &spec, now_ms()));
    ExitCode::SUCCESS
}

fn jwks(run: &RunArgs) -> ExitCode {
    let Some(path) = &run.jwt_key_file else {
        eprintln!("roomcast-bridge jwks: --jwt-key-file is required");
        return ExitCode::from(2);
    };
    match supervisor::signing_key(path, run.jwt_kid.clone()) {
        Ok(key) => match key.public_jwks() {
            Some(jwks) => {
                println!("{jwks}");
                ExitCode::SUCCESS
            }
            None => ExitCode::FAILURE,
        },
        Err(e) => {
            eprintln!("roomcast-bridge jwks: {e}");
            ExitCode::FAILURE
        }
    }
}
