//! The runtime's own socket, past wrangler's proxy.
//!
//! Clients of `wrangler dev` reach the worker through a second workerd,
//! wrangler's proxy, which holds about six file descriptors per proxied
//! WebSocket: 5000 subscribers would need 30 000, over this machine's limit
//! of 20 000 per process, while the runtime holds about one per socket. The
//! runtime listens on a loopback port of its own (the proxy's upstream),
//! which serves the worker the same way; it is found from the runtime
//! process's listening sockets, as the one that answers `/healthz`.

use std::collections::HashSet;
use std::fs;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::time::timeout;

use crate::client::http::HttpConn;
use crate::client::net::Traffic;
use crate::measure::cpu;

/// How long a listening socket may take to answer `/healthz` (the runtime's
/// other sockets, its inspector and debug port, may never answer).
const PROBE: Duration = Duration::from_secs(2);
/// `st` of a listening socket in `/proc/net/tcp`.
const LISTEN: &str = "0A";

/// The address of the runtime of process group `pgid`, whose proxy listens
/// on `proxy_port`.
pub async fn runtime_addr(pgid: u32, proxy_port: u16) -> Result<SocketAddr> {
    let runtime = cpu::runtime_pid(pgid, proxy_port)?;
    for addr in listening(runtime)? {
        if answers_health(addr).await {
            return Ok(addr);
        }
    }
    anyhow::bail!("no socket of the runtime workerd (pid {runtime}) answers /healthz")
}

/// The loopback IPv4 sockets `pid` listens on.
fn listening(pid: u32) -> Result<Vec<SocketAddr>> {
    let inodes: HashSet<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("listing /proc/{pid}/fd"))?
        .filter_map(|fd| fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let table = fs::read_to_string(format!("/proc/{pid}/net/tcp"))
        .with_context(|| format!("reading /proc/{pid}/net/tcp"))?;
    Ok(table
        .lines()
        .skip(1)
        .filter_map(|line| {
            // sl local_address rem_address st ... uid timeout inode
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, st, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            (*st == LISTEN && inodes.contains(*inode)).then(|| parse_local(local))?
        })
        .collect())
}

/// `0100007F:95C5` (little-endian IPv4, big-endian port) as an address.
fn parse_local(hex: &str) -> Option<SocketAddr> {
    let (ip, port) = hex.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?.to_le_bytes();
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddr::from((ip, port)))
}

async fn answers_health(addr: SocketAddr) -> bool {
    let probe = async {
        let mut http = HttpConn::connect(addr, Traffic::new()).await?;
        let (status, _) = http.get("/healthz", None).await?;
        Ok::<_, anyhow::Error>(status.is_success())
    };
    matches!(timeout(PROBE, probe).await, Ok(Ok(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_addresses() {
        assert_eq!(
            parse_local("0100007F:95C5"),
            Some(SocketAddr::from(([127, 0, 0, 1], 0x95C5)))
        );
        assert_eq!(parse_local("nonsense"), None);
    }
}
