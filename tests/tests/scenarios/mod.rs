//! Scenarios that share one `wrangler dev`, each reported as a test of its
//! own: its own name in the output, its own pass or fail, its own place in
//! cargo's filters (`cargo test --test rooms -- resume`).
//!
//! Starting the worker takes about two seconds, more than most scenarios
//! take, so the scenarios that need the same configuration start it once
//! (a [`Group`]) instead of once a test. libtest's `#[test]`s cannot share
//! anything that must be torn down: statics are never dropped, so a worker
//! kept in one would outlive the binary. A file of groups is therefore a
//! `harness = false` test target (tests/Cargo.toml) whose `main` hands them
//! to [`main`], which runs them with libtest-mimic: libtest's flags,
//! filters and `test result:` line (the one scripts/test-counts.sh reads),
//! and workers owned by the trials, where dropping one kills its process
//! group (`roomcast_tests::Service`) before the binary exits.
//!
//! A group's worker starts when the first of its scenarios that the filters
//! let through runs, and stops after the last one (`--list` starts
//! nothing). A worker that does not start fails each of the group's
//! scenarios with why; one that dies fails those after it with its log.
//!
//! A group's scenarios run one at a time, also under `--test-threads`
//! above 1 (then not always in the order given): some watch the whole
//! worker (the registry announces every room), so nothing else may run on
//! it beside them. Each gets a fresh tokio runtime, as `#[tokio::test]`
//! gives each test, so nothing a failed scenario left running outlives it.
//! Scenarios that mostly wait on the room's clocks run [`Group::together`]
//! instead: all at once on one runtime, as `tokio::join!` would, except
//! that a panic ends only the scenario that panicked; each is then
//! reported in its turn.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::join_all;
use futures_util::FutureExt;
use libtest_mimic::{Arguments, Failed, Trial};
use roomcast_tests::Worker;

/// How a group starts its worker.
pub type Start = fn() -> Pin<Box<dyn Future<Output = Worker>>>;

/// One scenario: an `async fn(&Worker)`, boxed ([`group!`] does it).
pub type Scenario = for<'a> fn(&'a Worker) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

/// Scenarios that run on one worker, started by `start`.
pub struct Group {
    start: Start,
    scenarios: Vec<(&'static str, Scenario)>,
    together: bool,
}

impl Group {
    pub fn new(start: Start) -> Group {
        Group {
            start,
            scenarios: Vec::new(),
            together: false,
        }
    }

    /// Adds a scenario, reported as the test `name`.
    pub fn scenario(mut self, name: &'static str, scenario: Scenario) -> Group {
        self.scenarios.push((name, scenario));
        self
    }

    /// Runs the scenarios all at once rather than one after another.
    #[allow(dead_code)] // Not every file that includes this module has such a group.
    pub fn together(mut self) -> Group {
        self.together = true;
        self
    }
}

/// A [`Group`] of `async fn(&Worker)` scenarios, each named after its
/// function, on the worker of `async fn start() -> Worker`:
/// `group!(start; health, admission)`.
macro_rules! group {
    ($start:ident; $($scenario:ident),+ $(,)?) => {
        $crate::scenarios::Group::new(|| Box::pin($start()))
            $(.scenario(stringify!($scenario), |worker| Box::pin($scenario(worker))))+
    };
}

/// Runs every group's scenarios as tests, with the command line's flags and
/// filters; what a `harness = false` test's `main` returns.
pub fn main(groups: Vec<Group>) -> ExitCode {
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    for group in groups {
        let runs = |name: &'static str| {
            let trial = Trial::test(name, || Ok(()));
            !args.list && !args.is_filtered_out(&trial) && !args.is_ignored(&trial)
        };
        let selected: Vec<_> = group
            .scenarios
            .iter()
            .copied()
            .filter(|(name, _)| runs(name))
            .collect();
        let shared = Arc::new(Mutex::new(Shared {
            start: group.start,
            worker: None,
            left: selected.len(),
            together: group.together.then_some(selected),
            outcomes: None,
        }));
        for (name, scenario) in group.scenarios {
            let shared = Arc::clone(&shared);
            trials.push(Trial::test(name, move || {
                // A scenario that failed poisoned the lock, and left the
                // worker as usable as a failed test leaves it.
                let mut shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
                shared.run(name, scenario).map_err(Failed::from)
            }));
        }
    }
    libtest_mimic::run(&args, trials).exit_code()
}

/// One group's worker and what its scenarios need to share it.
struct Shared {
    start: Start,
    /// `Err` holds why it did not start, for every scenario of the group
    /// to fail with, instead of each starting it again.
    worker: Option<Result<Worker, String>>,
    /// Scenarios of the group still to report: the last stops the worker.
    left: usize,
    /// A group run together: the scenarios that the filters let through.
    together: Option<Vec<(&'static str, Scenario)>>,
    /// Their outcomes, once they ran, until each is reported.
    outcomes: Option<HashMap<&'static str, Result<(), String>>>,
}

impl Shared {
    fn run(&mut self, name: &'static str, scenario: Scenario) -> Result<(), String> {
        let outcome = match self.outcomes.as_mut() {
            Some(outcomes) => outcomes
                .remove(name)
                .unwrap_or_else(|| Err(format!("{name} was not run with its group"))),
            None => self.run_now(name, scenario),
        };
        self.left = self.left.saturating_sub(1);
        if self.left == 0 {
            self.worker = None;
        }
        outcome
    }

    /// Runs `scenario`, or the whole group when it runs together, on a
    /// runtime of its own; whatever is left running on it ends with it.
    fn run_now(&mut self, name: &'static str, scenario: Scenario) -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let start = self.start;
        let worker = self.worker.get_or_insert_with(|| {
            catch_unwind(AssertUnwindSafe(|| runtime.block_on(start())))
                .map_err(|panic| format!("the shared worker did not start: {}", message(&*panic)))
        });
        let worker = match worker {
            Ok(worker) => worker,
            Err(why) => return Err(why.clone()),
        };
        if let Some(code) = worker.service.exited() {
            return Err(format!(
                "the shared worker exited with {code}\n{}",
                worker.service.log_tail()
            ));
        }
        let Some(together) = &self.together else {
            return catch_unwind(AssertUnwindSafe(|| runtime.block_on(scenario(worker))))
                .map_err(|panic| message(&*panic));
        };
        let all = together.iter().map(|&(name, scenario)| {
            AssertUnwindSafe(scenario(worker))
                .catch_unwind()
                .map(move |outcome| (name, outcome.map_err(|panic| message(&*panic))))
        });
        let mut outcomes: HashMap<_, _> = runtime.block_on(join_all(all)).into_iter().collect();
        let outcome = outcomes
            .remove(name)
            .unwrap_or_else(|| Err(format!("{name} was not run with its group")));
        self.outcomes = Some(outcomes);
        outcome
    }
}

/// What a panic said (`assert!` and `panic!` give a string).
fn message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".into())
}
