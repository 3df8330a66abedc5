//! Part 5, footprint: what a deploy ships (gzip -9 sizes of the bundle) and
//! what a room costs to start: the first connect to a fresh room (the
//! Durable Object is created, and for roomcast its SQLite schema) against a
//! second connect to the same, now running, room.
//!
//! Connect time is TCP connect, WebSocket upgrade and the `welcome` frame,
//! i.e. the time until a client can rely on receiving.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use roomcast_tests::repo_root;

use crate::client::net::Traffic;
use crate::client::ws;
use crate::measure::stats::Spread;
use crate::server::{Flavor, Server};
use crate::table::{cell, Table};

/// A file of the deployed bundle.
pub struct Asset {
    pub path: PathBuf,
    pub bytes: u64,
    pub gzipped: u64,
}

/// Connect times, ms.
pub struct ColdStart {
    pub cold_ms: Spread,
    pub warm_ms: Spread,
}

/// The files `wrangler deploy` would upload for `flavor` (static assets and
/// source maps aside), from a dry run into `target/bench-bundle/<flavor>`:
/// what each rung ships after wrangler's bundling, its framework included.
pub fn bundle(flavor: Flavor, config: &Path) -> Result<Vec<Asset>> {
    let out = repo_root().join("target/bench-bundle").join(flavor.slug());
    let _ = std::fs::remove_dir_all(&out);
    let dry_run = Command::new(repo_root().join("node_modules/.bin/wrangler"))
        .current_dir(repo_root())
        .args(["deploy", "--dry-run", "--config"])
        .arg(config)
        .arg("--outdir")
        .arg(&out)
        .env("WRANGLER_SEND_METRICS", "false")
        .output()
        .context("running wrangler deploy --dry-run")?;
    if !dry_run.status.success() {
        bail!(
            "wrangler deploy --dry-run --config {} failed:\n{}",
            config.display(),
            String::from_utf8_lossy(&dry_run.stderr)
        );
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&out).with_context(|| format!("listing {}", out.display()))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        // wrangler's note to the reader, and maps it does not upload by default.
        if name != "README.md" && !name.ends_with(".map") {
            files.push(path);
        }
    }
    files.sort();
    files.iter().map(|file| measure_file(file, &out)).collect()
}

/// `path`'s sizes, named relative to `dir`.
fn measure_file(path: &Path, dir: &Path) -> Result<Asset> {
    let bytes = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    let gzip = Command::new("gzip")
        .arg("-9c")
        .arg(path)
        .output()
        .context("running gzip")?;
    if !gzip.status.success() {
        bail!("gzip -9c {} failed", path.display());
    }
    Ok(Asset {
        path: path.strip_prefix(dir).unwrap_or(path).to_owned(),
        bytes,
        gzipped: gzip.stdout.len() as u64,
    })
}

/// `samples` fresh rooms per server: the first connect to each, then a
/// second one; one [`ColdStart`] per server, samples alternating between
/// servers.
pub async fn cold_start(servers: &[Server], samples: usize) -> Result<Vec<ColdStart>> {
    let mut times: Vec<(Vec<f64>, Vec<f64>)> = servers.iter().map(|_| Default::default()).collect();
    for _ in 0..samples {
        for (server, (cold, warm)) in servers.iter().zip(&mut times) {
            let (first, second) = connect_twice(server)
                .await
                .with_context(|| format!("cold start on {}", server.flavor.label()))?;
            cold.push(first);
            warm.push(second);
        }
    }
    Ok(times
        .into_iter()
        .map(|(cold, warm)| ColdStart {
            cold_ms: Spread::of(cold),
            warm_ms: Spread::of(warm),
        })
        .collect())
}

/// Connect times (ms) of the first and the second connect to a fresh room.
async fn connect_twice(server: &Server) -> Result<(f64, f64)> {
    let path = server.ws_path(&server.fresh_room("cold"));
    let started = Instant::now();
    let first = ws::connect(server.addr(), &path, Traffic::new())
        .await
        .context("first connect to a fresh room")?;
    let cold = started.elapsed().as_secs_f64() * 1000.0;
    let started = Instant::now();
    let second = ws::connect(server.addr(), &path, Traffic::new())
        .await
        .context("second connect to the room")?;
    let warm = started.elapsed().as_secs_f64() * 1000.0;
    ws::close(first).await;
    ws::close(second).await;
    Ok((cold, warm))
}

/// The part's tables: each server's bundle, then its connect times;
/// `bundles` and `cold` in [`Flavor::LADDER`] order.
pub fn render(out: &mut String, bundles: &[(Flavor, &[Asset])], cold: &[(Flavor, &ColdStart)]) {
    let mut table = Table::new(&["server", "file", "bytes", "gzip -9 bytes"]);
    for (flavor, assets) in bundles {
        let mut total = (0, 0);
        for asset in assets.iter() {
            table.row(vec![
                flavor.label().into(),
                asset.path.display().to_string(),
                asset.bytes.to_string(),
                asset.gzipped.to_string(),
            ]);
            total = (total.0 + asset.bytes, total.1 + asset.gzipped);
        }
        table.row(vec![
            flavor.label().into(),
            "**total**".into(),
            total.0.to_string(),
            total.1.to_string(),
        ]);
    }
    table.render_into(out);
    let mut table = Table::new(&[
        "server",
        "first connect, fresh room (ms)",
        "second connect, running room (ms)",
    ]);
    for (flavor, cold) in cold {
        table.row(vec![
            flavor.label().into(),
            cell(&cold.cold_ms),
            cell(&cold.warm_ms),
        ]);
    }
    table.render_into(out);
}
