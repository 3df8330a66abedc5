//! What a reader needs to judge the figures: the machine, the software
//! under test, how busy the machine was, and what was run.

use std::fs;

use roomcast_tests::repo_root;

/// `(what, value)` pairs describing the machine and the tools.
pub fn machine() -> Vec<(String, String)> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or("unknown".into(), |kb| {
            format!("{:.1} GiB", kb as f64 / 1048576.0)
        });
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    vec![
        ("CPU".into(), format!("{model}, {cores} cores")),
        ("memory".into(), memory),
        ("kernel".into(), kernel.trim().to_owned()),
        ("wrangler".into(), package_version("node_modules/wrangler")),
        (
            "workerd".into(),
            package_version("node_modules/@cloudflare/workerd-linux-64"),
        ),
        (
            "partyserver".into(),
            package_version("node_modules/partyserver"),
        ),
    ]
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn package_version(dir: &str) -> String {
    let manifest = repo_root().join(dir).join("package.json");
    fs::read_to_string(manifest)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|json| json["version"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}
