//! Reading a V8 CPU profile (what `Profiler.stop` returns, and what
//! DevTools opens as a `.cpuprofile`): time per function, self and total.
//!
//! The profile is a call tree of nodes plus a list of samples (the node
//! that was on top of the stack) and the time between samples. A sample's
//! time is the gap to the next sample, as DevTools counts it. Functions
//! are grouped by name and script without Rust's symbol hash, because
//! monomorphised copies of one function are one thing to a reader; *total*
//! counts a sample once per function on its stack, so recursion is not
//! double counted. V8's own pseudo-frames (`(idle)`, `(program)`,
//! `(garbage collector)`) are kept: idle time is the share of the window
//! the isolate waited, and the busy time is everything else.
//!
//! wasm-bindgen's JavaScript glue (each import the Rust code calls: `exec`,
//! `send`, string decoding, ...) reaches V8 anonymous, because wrangler's
//! bundler wraps each function as `key: __name(function (...) {...}, "key")`.
//! [`Profile::name_anonymous`] names them after that key, from the script's
//! source, so the glue is not one opaque `(anonymous)` line.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::hash::Hash;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::table::{number, Table};

#[derive(Deserialize)]
pub struct Profile {
    nodes: Vec<Node>,
    #[serde(default)]
    samples: Vec<u64>,
    #[serde(rename = "timeDeltas", default)]
    time_deltas: Vec<i64>,
}

#[derive(Deserialize)]
struct Node {
    id: u64,
    #[serde(rename = "callFrame")]
    call_frame: CallFrame,
    #[serde(default)]
    children: Vec<u64>,
}

#[derive(Deserialize)]
struct CallFrame {
    #[serde(rename = "functionName")]
    function_name: String,
    url: String,
    #[serde(rename = "scriptId", default)]
    script_id: String,
    #[serde(rename = "lineNumber", default)]
    line: i64,
    #[serde(rename = "columnNumber", default)]
    column: i64,
}

/// One function's time over the profile, µs.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    pub name: String,
    /// Where it lives: `wasm` for the worker's Rust, else the script's file name.
    pub script: String,
    pub self_us: f64,
    pub total_us: f64,
}

/// The functions of a profile and the time it covered.
pub struct Summary {
    /// Busiest first (self time).
    pub functions: Vec<Function>,
    /// Everything sampled, µs.
    pub sampled_us: f64,
    /// Of which the isolate was idle, µs.
    pub idle_us: f64,
}

impl Profile {
    pub fn parse(value: serde_json::Value) -> Result<Profile> {
        serde_json::from_value(value).context("not a V8 CPU profile")
    }

    /// The scripts (ids) that hold anonymous functions.
    pub fn anonymous_scripts(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .nodes
            .iter()
            .map(|n| &n.call_frame)
            .filter(|f| f.function_name.is_empty() && !f.url.is_empty())
            .map(|f| f.script_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Names each anonymous function after the property or variable it is
    /// assigned to, read from its script's source in `sources` (by script
    /// id); wasm-bindgen's hash suffix is dropped (`__wbg_exec_85b6…` is
    /// `__wbg_exec`).
    pub fn name_anonymous(&mut self, sources: &HashMap<String, String>) {
        for frame in self.nodes.iter_mut().map(|n| &mut n.call_frame) {
            if !frame.function_name.is_empty() {
                continue;
            }
            let Some(source) = sources.get(&frame.script_id) else {
                continue;
            };
            let line = usize::try_from(frame.line)
                .ok()
                .and_then(|l| source.lines().nth(l));
            let prefix = line.and_then(|l| l.get(..usize::try_from(frame.column).ok()?));
            if let Some(name) = prefix.and_then(assigned_name) {
                frame.function_name = name;
            }
        }
    }

    pub fn summary(&self) -> Summary {
        let tree = self.tree();
        let keys: Vec<(String, String)> = self.nodes.iter().map(|n| key(&n.call_frame)).collect();
        let mut functions: HashMap<&(String, String), Function> = HashMap::new();
        let mut sampled_us = 0.0;
        let mut idle_us = 0.0;
        for (top, us) in self.timed_samples(&tree) {
            sampled_us += us;
            if keys[top].0 == "(idle)" {
                idle_us += us;
            }
            let entry = |k: &(String, String)| Function {
                name: k.0.clone(),
                script: k.1.clone(),
                self_us: 0.0,
                total_us: 0.0,
            };
            functions
                .entry(&keys[top])
                .or_insert_with(|| entry(&keys[top]))
                .self_us += us;
            let mut seen = HashSet::new();
            for node in tree.stack(top) {
                let k = &keys[node];
                if k.0 != "(root)" && seen.insert(k) {
                    functions.entry(k).or_insert_with(|| entry(k)).total_us += us;
                }
            }
        }
        let mut functions: Vec<Function> = functions.into_values().collect();
        functions.sort_by(|a, b| b.self_us.total_cmp(&a.self_us).then(a.name.cmp(&b.name)));
        Summary {
            functions,
            sampled_us,
            idle_us,
        }
    }

    /// Samples by what `classify` makes of each one's stack: the function
    /// names (without symbol hashes) from the top of the stack down to the
    /// root.
    pub fn samples_by<K: Eq + Hash>(&self, classify: impl Fn(&[&str]) -> K) -> HashMap<K, u64> {
        let tree = self.tree();
        let mut per_node: HashMap<usize, u64> = HashMap::new();
        for sample in &self.samples {
            if let Some(&top) = tree.index.get(sample) {
                *per_node.entry(top).or_default() += 1;
            }
        }
        let mut counts = HashMap::new();
        for (top, n) in per_node {
            let names: Vec<String> = tree
                .stack(top)
                .map(|node| key(&self.nodes[node].call_frame).0)
                .collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            *counts.entry(classify(&names)).or_default() += n;
        }
        counts
    }

    /// The time between samples as the profiler kept it (the median gap),
    /// µs: V8 takes longer than the interval it is asked for, and workerd
    /// takes no samples while the isolate waits, so neither the asked
    /// interval nor the mean gap is the time one sample stands for.
    pub fn sampling_period_us(&self) -> f64 {
        let mut gaps: Vec<i64> = self.time_deltas.iter().skip(1).copied().collect();
        gaps.sort_unstable();
        gaps.get(gaps.len() / 2).map_or(f64::NAN, |&g| g as f64)
    }

    fn tree(&self) -> Tree {
        let index: HashMap<u64, usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id, i))
            .collect();
        let mut parent = vec![None; self.nodes.len()];
        for (i, node) in self.nodes.iter().enumerate() {
            for child in &node.children {
                if let Some(&c) = index.get(child) {
                    parent[c] = Some(i);
                }
            }
        }
        Tree { index, parent }
    }

    /// Each sample's top node and its time: the gap to the next sample, as
    /// DevTools counts it (the last sample has none).
    fn timed_samples<'a>(&'a self, tree: &'a Tree) -> impl Iterator<Item = (usize, f64)> + 'a {
        self.samples.iter().enumerate().filter_map(|(i, sample)| {
            let top = *tree.index.get(sample)?;
            let us = self.time_deltas.get(i + 1).copied().unwrap_or(0).max(0) as f64;
            Some((top, us))
        })
    }
}

/// The call tree's shape: nodes by id, and each node's parent.
struct Tree {
    index: HashMap<u64, usize>,
    parent: Vec<Option<usize>>,
}

impl Tree {
    /// `top` and its ancestors, up to the root.
    fn stack(&self, top: usize) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(Some(top), |&node| self.parent[node])
    }
}

/// The key or variable a function starting right after `prefix` is assigned
/// to: `key: function`, `key: /* @__PURE__ */ __name(function`, `x = (`.
fn assigned_name(prefix: &str) -> Option<String> {
    let mut rest = prefix.trim_end();
    for noise in ["function", "async", "__name(", "/* @__PURE__ */"] {
        rest = rest.strip_suffix(noise).unwrap_or(rest).trim_end();
    }
    let rest = rest
        .strip_suffix(':')
        .or_else(|| rest.strip_suffix('='))?
        .trim_end();
    let start = rest
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
        .map_or(0, |i| i + 1);
    let name = &rest[start..];
    if name.is_empty() {
        return None;
    }
    // wasm-bindgen's imports end in `_` and a 16 hex digit hash; its
    // generic helpers end in a counter (`_0000000000000005`) that tells them
    // apart, so that one stays.
    Some(match name.rsplit_once('_') {
        Some((base, hash))
            if hash.len() == 16
                && hash.bytes().all(|b| b.is_ascii_hexdigit())
                && !hash.starts_with("0000") =>
        {
            base.to_owned()
        }
        _ => name.to_owned(),
    })
}

/// A function's name without Rust's `::h<16 hex>` symbol hash, and its
/// script's short name.
fn key(frame: &CallFrame) -> (String, String) {
    let name = match frame.function_name.rsplit_once("::h") {
        Some((base, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            base.to_owned()
        }
        _ if frame.function_name.is_empty() => "(anonymous)".to_owned(),
        _ => frame.function_name.clone(),
    };
    let script = if frame.url.starts_with("wasm://") {
        "wasm".to_owned()
    } else {
        frame.url.rsplit('/').next().unwrap_or_default().to_owned()
    };
    (name, script)
}

impl Summary {
    /// The `top` functions by self time as a markdown table; shares are of
    /// the busy (not idle) time.
    pub fn render(&self, top: usize) -> String {
        let busy = (self.sampled_us - self.idle_us).max(1.0);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} ms sampled, {} ms busy ({}% idle)\n",
            number(self.sampled_us / 1000.0),
            number(busy / 1000.0),
            number(100.0 * self.idle_us / self.sampled_us.max(1.0)),
        );
        let mut table = Table::new(&[
            "self ms",
            "self % of busy",
            "total % of busy",
            "function",
            "script",
        ]);
        for f in self
            .functions
            .iter()
            .filter(|f| f.name != "(idle)")
            .take(top)
        {
            table.row(vec![
                number(f.self_us / 1000.0),
                number(100.0 * f.self_us / busy),
                number(100.0 * f.total_us / busy),
                format!("`{}`", f.name),
                f.script.clone(),
            ]);
        }
        table.render_into(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frame(id: u64, name: &str, url: &str, children: &[u64]) -> serde_json::Value {
        json!({"id": id, "callFrame": {"functionName": name, "url": url, "scriptId": "0",
               "lineNumber": -1, "columnNumber": -1}, "hitCount": 0, "children": children})
    }

    #[test]
    fn anonymous_glue_is_named_after_its_key() {
        let profile = |column: i64| {
            Profile::parse(json!({
                "nodes": [{"id": 1, "callFrame": {"functionName": "", "url": "shim.js",
                           "scriptId": "5", "lineNumber": 1, "columnNumber": column}}],
                "samples": [], "timeDeltas": [],
            }))
            .unwrap()
        };
        let line =
            r#"  }, "x"), __wbg_exec_85b624bc72d8a6f2: /* @__PURE__ */ __name(function(e, t) {"#;
        let sources = HashMap::from([("5".to_owned(), format!("first\n{line}\n"))]);
        let column = line.find("function").unwrap() as i64;
        let mut glue = profile(column);
        assert_eq!(glue.anonymous_scripts(), ["5"]);
        glue.name_anonymous(&sources);
        assert_eq!(glue.nodes[0].call_frame.function_name, "__wbg_exec");
        let mut nowhere = profile(2);
        nowhere.name_anonymous(&sources);
        assert_eq!(nowhere.nodes[0].call_frame.function_name, "");
        assert_eq!(assigned_name("let handler = ").as_deref(), Some("handler"));
        assert_eq!(
            assigned_name("__wbindgen_generic_0000000000000005: function").as_deref(),
            Some("__wbindgen_generic_0000000000000005")
        );
        assert_eq!(assigned_name("return "), None);
    }

    #[test]
    fn self_and_total_time_per_function_without_symbol_hashes() {
        let wasm = "wasm://wasm/roomcast_worker.wasm-0";
        let profile = Profile::parse(json!({
            "nodes": [
                frame(1, "(root)", "", &[2, 5]),
                frame(2, "webSocketMessage", "file:///x/shim.js", &[3]),
                frame(3, "room::publish::h0123456789abcdef", wasm, &[4]),
                frame(4, "room::publish::hfedcba9876543210", wasm, &[]),
                frame(5, "(idle)", "", &[]),
            ],
            "startTime": 0, "endTime": 100,
            // Samples on publish (twice, the inner copy), the shim, idle; the
            // last sample has no gap after it.
            "samples": [4, 3, 2, 5, 5],
            "timeDeltas": [0, 10, 20, 30, 40],
        }))
        .unwrap();
        let summary = profile.summary();
        assert_eq!(summary.sampled_us, 100.0);
        assert_eq!(summary.idle_us, 40.0);
        let get = |name: &str| {
            summary
                .functions
                .iter()
                .find(|f| f.name == name)
                .cloned()
                .unwrap()
        };
        let publish = get("room::publish");
        assert_eq!((publish.self_us, publish.total_us), (30.0, 30.0));
        assert_eq!(publish.script, "wasm");
        let shim = get("webSocketMessage");
        assert_eq!((shim.self_us, shim.total_us), (30.0, 60.0));
        assert_eq!(shim.script, "shim.js");
        assert_eq!(summary.functions[0].name, "(idle)");
        let table = summary.render(10);
        assert!(
            table.contains("| 0.0300 | 50.0 | 50.0 | `room::publish` | wasm |"),
            "{table}"
        );
    }
}
