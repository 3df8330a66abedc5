//! Resident memory of a process, `VmRSS` from `/proc/<pid>/status`: what
//! the machine gives it, the figure an operator sizes a host by (the
//! bridge's footprint, the runtime's cost per subscription).

use anyhow::{Context, Result};

/// `VmRSS` of `pid`, KiB.
pub fn resident_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_resident() {
        let pid = std::process::id();
        assert!(resident_kib(pid).expect("our own status") > 0);
    }
}
