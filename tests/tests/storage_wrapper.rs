//! Every SQLite statement the worker runs goes through `Db`
//! (`worker/src/storage.rs`), the wrapper that counts statements and rows
//! for `/stats` `storage`. A statement run on the runtime's handle directly
//! would work, and cost money, without appearing in any count, so
//! `tests/tests/cost.rs` would price a publish that is not the real one.
//! This test reads the worker's sources (it starts nothing) and names the
//! file and the call that gets around the wrapper.
//!
//! Outside `storage.rs`, the runtime's storage may be used only for what is
//! not SQL: the alarm (`get_alarm`, `set_alarm`, `delete_alarm`) and
//! `delete_all` (retirement). Its SQL handle may be taken only to build a
//! `Db` (`Db::new(….sql())`). Its key-value methods are refused too: on a
//! SQLite-backed object they read and write rows of the same database.

use std::path::{Path, PathBuf};

use roomcast_tests::repo_root;

/// Calls that reach the runtime's SQL, or its key-value rows, without `Db`.
/// Matched on the source with all whitespace removed, so a call split over
/// lines by rustfmt is still found.
const FORBIDDEN: &[(&str, &str)] = &[
    (".exec(", "runs SQL on the runtime's handle"),
    (".exec_raw(", "runs SQL on the runtime's handle"),
    ("SqlCursor", "holds a cursor `Db` did not count"),
    ("storage().as_raw(", "takes the raw storage object"),
    ("storage.as_raw(", "takes the raw storage object"),
];

/// Key-value methods of the runtime's `Storage`, refused on anything named
/// `storage` (`state.storage().put(…)`, `let storage = …; storage.put(…)`).
const KEY_VALUE: &[&str] = &[
    "get",
    "get_multiple",
    "put",
    "put_raw",
    "put_multiple",
    "put_multiple_raw",
    "delete",
    "delete_multiple",
    "list",
    "list_with_options",
    "transaction",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comment lines and without whitespace: what
/// a comment says about `.sql()` is no call.
fn code(path: &Path) -> String {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .flat_map(|line| line.chars().filter(|c| !c.is_whitespace()))
        .collect()
}

/// Every use of the runtime's SQL or key-value storage in `code` that does
/// not go through `Db`, described.
fn bypasses(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (needle, why) in FORBIDDEN {
        if code.contains(needle) {
            found.push(format!("`{needle}` {why}"));
        }
    }
    // `SqlStorage` is the handle; `SqlStorageValue` (a binding) is fine.
    if code
        .match_indices("SqlStorage")
        .any(|(at, _)| !code[at..].starts_with("SqlStorageValue"))
    {
        found.push("`SqlStorage` holds the handle outside `Db`".into());
    }
    for method in KEY_VALUE {
        for receiver in ["storage()", "storage"] {
            let needle = format!("{receiver}.{method}(");
            if code.contains(&needle) {
                found.push(format!(
                    "`{needle}` reads or writes rows `Db` does not count"
                ));
            }
        }
    }
    // `.sql()` only as the whole argument of `Db::new(…)`: the receiver in
    // between is a plain chain such as `self.state.storage()`.
    for (at, _) in code.match_indices(".sql()") {
        let wrapped = code[..at].rfind("Db::new(").is_some_and(|open| {
            let receiver = &code[open + "Db::new(".len()..at];
            receiver
                .chars()
                .all(|c| c.is_alphanumeric() || "_.()".contains(c))
                && code[at + ".sql()".len()..].starts_with(')')
        });
        if !wrapped {
            found.push("`.sql()` outside `Db::new(…)`".into());
        }
    }
    found
}

#[test]
fn every_sql_statement_goes_through_the_counting_wrapper() {
    let src = repo_root().join("worker/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let wrapper = src.join("storage.rs");
    assert!(
        files.contains(&wrapper),
        "the wrapper moved: {} is gone",
        wrapper.display()
    );
    // The scan sees what it should: the wrapper's own calls are found.
    assert!(
        !bypasses(&code(&wrapper)).is_empty(),
        "the scan no longer recognises the wrapper's own SQL calls"
    );
    let mut wrapped = 0;
    let mut offenders = Vec::new();
    for file in files.iter().filter(|f| **f != wrapper) {
        let code = code(file);
        wrapped += code.matches("Db::new(").count();
        for bypass in bypasses(&code) {
            offenders.push(format!(
                "{}: {bypass}",
                file.strip_prefix(repo_root()).unwrap_or(file).display()
            ));
        }
    }
    assert!(
        offenders.is_empty(),
        "SQL outside the counting wrapper (worker/src/storage.rs, `Db`); its cost would be \
         missing from /stats `storage`:\n  {}",
        offenders.join("\n  ")
    );
    assert!(
        wrapped >= 2,
        "the room and the registry each open their storage with `Db::new`; found {wrapped}"
    );
}

#[test]
fn the_scan_finds_each_way_around_the_wrapper() {
    for (code, expected) in [
        (
            "letc=self.state.storage().sql().exec(\"SELECT1\",None)?;",
            2,
        ),
        ("letsql=state.storage().sql();", 1),
        ("fnf(s:&SqlStorage){}", 1),
        (
            "letstorage=self.state.storage();storage.put(\"k\",1).await?;",
            1,
        ),
        ("self.state.storage().list().await?;", 1),
        ("Db::new(self.state.storage().sql())", 0),
        ("letv:SqlStorageValue=1.into();", 0),
        (
            "storage.set_alarm(10).await?;storage.delete_all().await?;",
            0,
        ),
    ] {
        assert_eq!(
            bypasses(code).len(),
            expected,
            "{code}: {:?}",
            bypasses(code)
        );
    }
}
