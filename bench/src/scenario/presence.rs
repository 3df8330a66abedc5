//! Part 7, presence: a join storm. N WebSocket clients (5000 by default),
//! each its own subject, join one fresh room at a bounded concurrency, on
//! roomcast alone; once with the presence right in every token and once
//! without, runs alternating.
//!
//! Per storm: the text frames every client received from its `welcome` until
//! the room fell quiet (no frame to any client for [`QUIET`]); the runtime
//! workerd's CPU over the storm (from `/proc`, as part 6's *runtime*); and
//! the time from the first connect until every client's view agreed. Every
//! client keeps the view a client library would ([`View`]); "agreed" depends
//! on what the room should show:
//!
//! - presence on, at most `PRESENCE_MEMBERS_LIMIT` clients: every view lists
//!   all N members;
//! - presence on, past the limit (the default: 5000 against 1000): every view
//!   saw the counts-only notice (or a counts-only state) and its last
//!   `occupancy` says N connections;
//! - presence off: every view's last `occupancy` says N connections.
//!
//! A storm whose views do not agree when the room falls quiet, or within
//! [`Plan::timeout`], is reported as missing rather than waited for (a worker
//! without presence never sends `occupancy`). Each members limit runs on a
//! server of its own; clients connect to the runtime directly, past
//! wrangler's proxy, as in part 6.

use std::fmt::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::future::join_all;
use futures_util::StreamExt;
use roomcast_tests::{presence_token, token, WorkerSpec};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout_at, Instant};
use tokio_tungstenite::tungstenite::Message;

use crate::client::net::Traffic;
use crate::client::presence::View;
use crate::client::ws;
use crate::measure::stats::Spread;
use crate::server::{Flavor, Server};
use crate::table::{cell, number, ratio, Table};

/// Clients joining at once: enough to make it a storm, few enough that
/// the runtime's accept queue and this process's sockets keep up.
const JOINS: usize = 200;
/// No frame to any client for this long ends a storm: three presence
/// intervals at the default `PRESENCE_INTERVAL_MS` (1000), so a pending
/// flush of diffs or occupancy has had its turn.
const QUIET: Duration = Duration::from_secs(3);
/// How often the storm checks for quiet.
const POLL: Duration = Duration::from_millis(100);
/// After a storm's clients closed, the room flushes their leaves within one
/// presence interval; waiting that out keeps it out of the next storm's CPU.
const SETTLE: Duration = Duration::from_secs(2);
/// Lifetime of the clients' tokens: longer than any invocation.
const TOKEN_TTL_SECS: u64 = 4 * 3600;
/// File descriptors the benchmark keeps besides its clients' sockets.
const SPARE_FILES: u64 = 1024;

pub struct Plan {
    pub clients: usize,
    /// `PRESENCE_MEMBERS_LIMIT` of each server; presence off runs on the first.
    pub members_limits: Vec<u64>,
    pub runs: usize,
    /// The longest a storm may take to agree.
    pub timeout: Duration,
    pub state_root: PathBuf,
    /// roomcast's wrangler configuration.
    pub config: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    pub presence: bool,
    pub members_limit: u64,
}

impl Variant {
    fn label(self, clients: usize) -> &'static str {
        match (self.presence, self.counts_only(clients)) {
            (false, _) => "presence off",
            (true, true) => "presence on, counts only",
            (true, false) => "presence on, member lists",
        }
    }

    fn counts_only(self, clients: usize) -> bool {
        self.presence && clients as u64 > self.members_limit
    }

    /// What every client's view holds once the room agrees.
    fn expect(self, clients: usize) -> Expect {
        let n = clients as u64;
        match (self.presence, self.counts_only(clients)) {
            (false, _) => Expect::Connections(n),
            (true, true) => Expect::CountsOnly(n),
            (true, false) => Expect::Members(clients),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Expect {
    Members(usize),
    CountsOnly(u64),
    Connections(u64),
}

impl Expect {
    fn met(self, view: &View) -> bool {
        match self {
            Expect::Members(n) => view.members() == n,
            Expect::CountsOnly(n) => view.counts_only() && view.connections() == Some(n),
            Expect::Connections(n) => view.connections() == Some(n),
        }
    }
}

/// One variant over its runs.
pub struct Outcome {
    pub variant: Variant,
    /// Text frames to all clients, per storm.
    pub frames: Spread,
    /// Runtime CPU seconds per storm.
    pub cpu_s: Spread,
    /// Seconds until every client had its `welcome`.
    pub connected_s: Spread,
    /// Seconds until every view agreed, over the storms that did.
    pub agreed_s: Spread,
    /// Storms whose views never agreed.
    pub missing: usize,
}

pub struct PresenceResults {
    pub clients: usize,
    pub runs: usize,
    pub timeout: Duration,
    pub outcomes: Vec<Outcome>,
}

/// One storm's figures.
struct Storm {
    frames: u64,
    cpu_s: f64,
    connected_s: f64,
    agreed_s: Option<f64>,
}

pub async fn run(plan: &Plan) -> Result<PresenceResults> {
    raise_open_files(plan.clients as u64 + SPARE_FILES)?;
    let mut servers = Vec::new();
    for &limit in &plan.members_limits {
        servers.push((limit, start(plan, limit).await?));
    }
    let mut variants: Vec<Variant> = plan
        .members_limits
        .iter()
        .map(|&members_limit| Variant {
            presence: true,
            members_limit,
        })
        .collect();
    variants.extend(plan.members_limits.first().map(|&members_limit| Variant {
        presence: false,
        members_limit,
    }));
    let tokens = |presence| -> Vec<String> {
        (0..plan.clients)
            .map(|i| {
                let sub = format!("bench-{i}");
                if presence {
                    presence_token(&sub, "*", None, TOKEN_TTL_SECS)
                } else {
                    token(&sub, &["*"], &[], TOKEN_TTL_SECS)
                }
            })
            .collect()
    };
    let (with, without) = (tokens(true), tokens(false));
    let mut storms: Vec<Vec<Storm>> = variants.iter().map(|_| Vec::new()).collect();
    for run in 1..=plan.runs {
        for (variant, done) in variants.iter().zip(&mut storms) {
            let (_, server) = servers
                .iter()
                .find(|(limit, _)| *limit == variant.members_limit)
                .context("a server per members limit")?;
            let tokens = if variant.presence { &with } else { &without };
            let what = format!(
                "{}, limit {}, {} clients, run {run}",
                variant.label(plan.clients),
                variant.members_limit,
                plan.clients
            );
            let storm = storm(server, *variant, plan, tokens)
                .await
                .with_context(|| format!("join storm: {what}"))?;
            progress(&what, &storm);
            done.push(storm);
        }
    }
    Ok(PresenceResults {
        clients: plan.clients,
        runs: plan.runs,
        timeout: plan.timeout,
        outcomes: variants
            .into_iter()
            .zip(storms)
            .map(|(variant, storms)| outcome(variant, &storms))
            .collect(),
    })
}

async fn start(plan: &Plan, limit: u64) -> Result<Server> {
    let limit = limit.to_string();
    let vars = [("PRESENCE_MEMBERS_LIMIT", limit.as_str())];
    let spec = WorkerSpec::default();
    let mut server = Server::start_with(Flavor::Ours, &plan.config, spec, &plan.state_root, &vars)
        .await
        .with_context(|| format!("starting roomcast, PRESENCE_MEMBERS_LIMIT {limit}"))?;
    server.bypass_proxy().await?;
    eprintln!(
        "[roomcast] wrangler dev up, clients to its runtime on {}, PRESENCE_MEMBERS_LIMIT {limit}",
        server.addr()
    );
    Ok(server)
}

/// The soft limit of open files raised to `needed` (at most the hard
/// limit): every client is a socket of this process.
fn raise_open_files(needed: u64) -> Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        if limit.rlim_cur >= needed {
            return Ok(());
        }
        if limit.rlim_max < needed {
            bail!(
                "{needed} open files needed, the hard limit is {} (ulimit -Hn)",
                limit.rlim_max
            );
        }
        limit.rlim_cur = needed;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// What every client of a storm adds to, read when the room is quiet.
struct Tally {
    start: Instant,
    clients: usize,
    frames: AtomicU64,
    /// µs from the start to the latest frame.
    last_frame_us: AtomicU64,
    agreeing: AtomicUsize,
    /// µs from the start until the last client agreed.
    agreed_us: AtomicU64,
}

impl Tally {
    fn new(clients: usize) -> Tally {
        Tally {
            start: Instant::now(),
            clients,
            frames: AtomicU64::new(0),
            last_frame_us: AtomicU64::new(0),
            agreeing: AtomicUsize::new(0),
            agreed_us: AtomicU64::new(0),
        }
    }

    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn frame(&self) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.last_frame_us
            .fetch_max(self.now_us(), Ordering::Relaxed);
    }

    /// A client's view started or stopped agreeing.
    fn agreement(&self, agrees: bool) {
        if !agrees {
            self.agreeing.fetch_sub(1, Ordering::SeqCst);
        } else if self.agreeing.fetch_add(1, Ordering::SeqCst) + 1 == self.clients {
            self.agreed_us.store(self.now_us(), Ordering::SeqCst);
        }
    }

    fn quiet(&self) -> bool {
        let last = Duration::from_micros(self.last_frame_us.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last) >= QUIET
    }

    /// Seconds until every view agreed, if they all do now.
    fn agreed_s(&self) -> Option<f64> {
        (self.agreeing.load(Ordering::SeqCst) == self.clients)
            .then(|| self.agreed_us.load(Ordering::SeqCst) as f64 / 1e6)
    }
}

/// A client of a storm: its follower task, and what tells it to close.
struct Client {
    stop: oneshot::Sender<()>,
    follower: JoinHandle<Result<()>>,
}

/// One storm of `tokens` into a fresh room of `server`.
async fn storm(server: &Server, variant: Variant, plan: &Plan, tokens: &[String]) -> Result<Storm> {
    let room = server.fresh_room("presence");
    let expect = variant.expect(plan.clients);
    let traffic = Traffic::new();
    let before = server.cpu()?;
    let tally = Arc::new(Tally::new(plan.clients));
    let deadline = tally.start + plan.timeout;
    let mut joining = futures_util::stream::iter(tokens)
        .map(|token| {
            let path = format!("/v1/rooms/{room}/ws?token={token}");
            let (traffic, tally) = (traffic.clone(), tally.clone());
            async move {
                let socket = ws::connect(server.addr(), &path, traffic).await?;
                tally.frame(); // the welcome, which the connect read
                let (stop, stopped) = oneshot::channel();
                let follower = tokio::spawn(follow(socket, expect, tally, stopped));
                Ok::<_, anyhow::Error>(Client { stop, follower })
            }
        })
        .buffer_unordered(JOINS);
    let mut clients = Vec::new();
    let joined = timeout_at(deadline, async {
        while let Some(client) = joining.next().await {
            clients.push(client?);
        }
        Ok::<_, anyhow::Error>(())
    })
    .await;
    drop(joining);
    let connected_s = match joined {
        Ok(Ok(())) => tally.start.elapsed().as_secs_f64(),
        Ok(Err(e)) => {
            close(clients).await?;
            return Err(e).context("joining");
        }
        // Not all joined within the timeout: the storm is missing.
        Err(_) => f64::NAN,
    };
    while !tally.quiet() && Instant::now() < deadline {
        sleep(POLL).await;
    }
    let cpu_s = (server.cpu()? - before).runtime;
    let storm = Storm {
        frames: tally.frames.load(Ordering::Relaxed),
        cpu_s,
        connected_s,
        agreed_s: tally.agreed_s().filter(|_| connected_s.is_finite()),
    };
    close(clients).await?;
    sleep(SETTLE).await;
    Ok(storm)
}

/// Reads a client's frames into its view until told to stop, then closes.
async fn follow(
    mut socket: ws::Socket,
    expect: Expect,
    tally: Arc<Tally>,
    mut stop: oneshot::Receiver<()>,
) -> Result<()> {
    let mut view = View::default();
    let mut agrees = false;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            frame = socket.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    tally.frame();
                    view.apply(&text)?;
                    if expect.met(&view) != agrees {
                        agrees = !agrees;
                        tally.agreement(agrees);
                    }
                }
                Some(Ok(Message::Close(close))) => bail!("the room closed a client: {close:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e).context("reading a client's frames"),
                None => bail!("a client's connection ended"),
            }
        }
    }
    ws::close(socket).await;
    Ok(())
}

/// Closes every client cleanly (their metas leave at the next flush) and
/// reports the first that failed while following.
async fn close(clients: Vec<Client>) -> Result<()> {
    let followers: Vec<JoinHandle<Result<()>>> = clients
        .into_iter()
        .map(|client| {
            let _ = client.stop.send(());
            client.follower
        })
        .collect();
    for followed in join_all(followers).await {
        followed.context("a client's follower panicked")??;
    }
    Ok(())
}

fn outcome(variant: Variant, storms: &[Storm]) -> Outcome {
    let spread = |f: fn(&Storm) -> f64| Spread::of(storms.iter().map(f));
    Outcome {
        variant,
        frames: spread(|s| s.frames as f64),
        cpu_s: spread(|s| s.cpu_s),
        connected_s: spread(|s| s.connected_s),
        agreed_s: spread(|s| s.agreed_s.unwrap_or(f64::NAN)),
        missing: storms.iter().filter(|s| s.agreed_s.is_none()).count(),
    }
}

fn progress(what: &str, storm: &Storm) {
    let agreed = storm
        .agreed_s
        .map_or("never".into(), |s| format!("after {} s", number(s)));
    eprintln!(
        "[roomcast] join storm, {what}: {} frames, runtime CPU {} s, connected in {} s, views agreed {agreed}",
        storm.frames,
        number(storm.cpu_s),
        number(storm.connected_s),
    );
}

/// The part's table, then presence on over off for the same members limit.
pub fn render(out: &mut String, results: &PresenceResults) {
    let n = results.clients;
    let _ = writeln!(
        out,
        "{n} clients, each its own subject, join one fresh room, {JOINS} at a time; {} runs \
         per variant. *frames*: text frames to all clients from their `welcome` until none \
         arrived for {} s. *runtime CPU*: the workerd that runs the room, over the same span \
         (/proc). *agreed*: from the first connect until every client's view held what the \
         room should show (all {n} members; or, counts only, the notice and occupancy \
         {n}; without presence, occupancy {n}); *missing*: runs whose clients had not all \
         joined, or whose views had not agreed, when the room fell quiet or {} s after the \
         first connect.\n",
        results.runs,
        QUIET.as_secs(),
        results.timeout.as_secs(),
    );
    let mut table = Table::new(&[
        "variant",
        "PRESENCE_MEMBERS_LIMIT",
        "frames",
        "frames / client",
        "runtime CPU s",
        "runtime CPU ms / join",
        "all connected, s",
        "agreed, s",
        "missing",
    ]);
    let per = |spread: &Spread, by: f64| Spread {
        median: spread.median / by,
        min: spread.min / by,
        max: spread.max / by,
    };
    for o in &results.outcomes {
        table.row(vec![
            o.variant.label(n).into(),
            o.variant.members_limit.to_string(),
            cell(&o.frames),
            cell(&per(&o.frames, n as f64)),
            cell(&o.cpu_s),
            cell(&per(&o.cpu_s, n as f64 / 1000.0)),
            cell(&o.connected_s),
            cell(&o.agreed_s),
            format!("{} of {}", o.missing, results.runs),
        ]);
    }
    table.render_into(out);
    let off = results.outcomes.iter().find(|o| !o.variant.presence);
    let Some(off) = off else {
        return;
    };
    let _ = writeln!(out, "**presence on / off (ratio of medians)**\n");
    let mut table = Table::new(&["variant", "frames", "runtime CPU", "agreed"]);
    for on in results.outcomes.iter().filter(|o| o.variant.presence) {
        table.row(vec![
            format!(
                "{}, limit {}",
                on.variant.label(n),
                on.variant.members_limit
            ),
            ratio(&on.frames, &off.frames),
            ratio(&on.cpu_s, &off.cpu_s),
            ratio(&on.agreed_s, &off.agreed_s),
        ]);
    }
    table.render_into(out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::presence::view;

    #[test]
    fn past_the_limit_a_presence_view_agrees_on_the_notice_and_the_count() {
        let on = Variant {
            presence: true,
            members_limit: 1,
        };
        let expect = on.expect(2);
        let occupancy = r#"{"type":"occupancy","room":"r","connections":2,"users":2,"members":2}"#;
        assert!(!expect.met(&view(&[occupancy])));
        let notice = r#"{"type":"presence","room":"r","counts_only":true,"joins":[],"leaves":[]}"#;
        assert!(expect.met(&view(&[notice, occupancy])));
        // Without presence the count alone is agreement.
        let off = Variant {
            presence: false,
            ..on
        };
        assert!(off.expect(2).met(&view(&[occupancy])));
    }

    #[test]
    fn within_the_limit_a_presence_view_agrees_when_it_lists_everyone() {
        let on = Variant {
            presence: true,
            members_limit: 2,
        };
        let expect = on.expect(2);
        let state = r#"{"type":"presence_state","room":"r","members":[{"sub":"a","metas":[{"conn_id":"1"}]}],"counts_only":false,"more":false}"#;
        let join = r#"{"type":"presence","room":"r","joins":[{"sub":"b","metas":[{"conn_id":"2"}]}],"leaves":[]}"#;
        assert!(!expect.met(&view(&[state])));
        assert!(expect.met(&view(&[state, join])));
    }

    #[test]
    fn the_last_client_to_agree_dates_the_storm_and_a_relapse_undoes_it() {
        let tally = Tally::new(2);
        tally.agreement(true);
        assert_eq!(tally.agreed_s(), None);
        tally.agreement(true);
        assert!(tally.agreed_s().is_some());
        tally.agreement(false);
        assert_eq!(tally.agreed_s(), None);
    }
}
