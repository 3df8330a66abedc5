#!/usr/bin/env bash
# `make fuzz` and `make test-fuzz`: every cargo-fuzz target in fuzz/, one
# after the other (one core each: the machine has two, and shares them), then
# one line per target with the inputs it ran and a total.
#
#   scripts/fuzz.sh --seconds S  each target for S seconds, from the corpus it
#                                grew before (fuzz/corpus/<target>, kept) and
#                                the committed seeds (fuzz/seeds/<target>), in
#                                libFuzzer's fork mode, which goes on after a
#                                crash: one bug does not hide the next
#   scripts/fuzz.sh --runs N     each target for N inputs from the seeds alone
#                                and a fixed random seed: the same inputs on
#                                every machine, so a failure in CI reproduces
#
# Built with `--sanitizer none`, which stable Rust builds as it is; cargo-fuzz's
# default, AddressSanitizer, needs `-Zsanitizer` (RUSTC_BOOTSTRAP=1 on stable)
# and runs about six times slower, for memory errors that only unsafe code
# can make, and roomcast-protocol has none. Debug assertions stay on, so an
# arithmetic overflow is a crash too.
#
# Every crash, timeout or out-of-memory input is kept in
# fuzz/artifacts/<target>/; the first of a target's is replayed to print its
# panic, and the script fails after the last target. It fails too when a
# target in fuzz/fuzz_targets/ has no [[bin]] in fuzz/Cargo.toml, or did not
# run (no input at all, or fewer than N with --runs): a run that fuzzed
# nothing has found nothing.
#
# The last line is the summary, for CI to add to its totals:
#   fuzz: <T> targets, <R> runs, <C> crashes, <F> failed
# T targets found in fuzz/fuzz_targets/, R inputs executed in all, C crash,
# timeout and out-of-memory inputs found, F targets that failed for any
# reason (a crash, a non-zero exit, too few inputs, not built); T - F passed.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:?usage: scripts/fuzz.sh --seconds S | --runs N}
amount=${2:?usage: scripts/fuzz.sh --seconds S | --runs N}
case $mode in
  --seconds | --runs) ;;
  *) echo "usage: scripts/fuzz.sh --seconds S | --runs N" >&2; exit 2 ;;
esac

# The targets present, and the ones cargo-fuzz knows: a source without its
# [[bin]] would otherwise be skipped without a word.
present=()
for source in fuzz/fuzz_targets/*.rs; do
  [[ -e $source ]] && present+=("$(basename "$source" .rs)")
done
listed=$(cargo fuzz list)
failed=()
for target in "${present[@]}"; do
  if ! grep -qxF "$target" <<<"$listed"; then
    echo "fuzz: $target: fuzz/fuzz_targets/$target.rs has no [[bin]] in fuzz/Cargo.toml" >&2
    failed+=("$target")
  fi
done

cargo fuzz build --sanitizer none
logs=fuzz/target/logs
mkdir -p "$logs"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

marker=$scratch/started
touch "$marker"
total_runs=0
total_crashes=0
ran=0
summary=()
for target in $listed; do
  if [[ $mode == --seconds ]]; then
    mkdir -p "fuzz/corpus/$target"
    corpus=("fuzz/corpus/$target")
    limit=("-max_total_time=$amount" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  else
    mkdir -p "$scratch/$target"
    corpus=("$scratch/$target")
    limit=("-runs=$amount" -seed=1)
  fi
  log=$logs/$target.log
  started=$SECONDS
  # A 10 s timeout: one input that slow is a way to stall a room.
  # Fork mode exits 0 after the crashes it ignored: the artifacts tell.
  exited=0
  cargo fuzz run --sanitizer none "$target" "${corpus[@]}" "fuzz/seeds/$target" -- \
    "${limit[@]}" -timeout=10 -dict=fuzz/roomcast.dict -print_final_stats=1 >"$log" 2>&1 || exited=$?
  seconds=$((SECONDS - started))
  mkdir -p "fuzz/artifacts/$target"
  mapfile -t found < <(find "fuzz/artifacts/$target" -type f -newer "$marker" | sort)
  # libFuzzer's final count, or the last progress line's (after a crash, and
  # in fork mode, whose jobs print their own).
  runs=$(awk '/^stat::number_of_executed_units:/ { n = $2; done = 1 }
              !done && /^#[0-9]+/ { n = substr($1, 2) }
              END { print n + 0 }' "$log")
  wanted=1
  [[ $mode == --runs ]] && wanted=$amount
  if ((${#found[@]} > 0)); then
    status="CRASH: ${#found[@]} input(s) in fuzz/artifacts/$target/, log in $log"
    failed+=("$target")
    echo "fuzz: $target: ${found[0]}:" >&2
    cargo fuzz run --sanitizer none "$target" "${found[0]}" 2>&1 |
      sed -n '/panicked at\|ERROR: libFuzzer/,/^stack backtrace/p' | head -20 >&2 || true
  elif ((exited != 0)); then
    status="FAILED (exit $exited), log in $log"
    failed+=("$target")
    tail -20 "$log" >&2
  elif ((runs < wanted)); then
    status="FAILED: ran $runs of $wanted inputs, log in $log"
    failed+=("$target")
  else
    status=ok
  fi
  ((runs > 0)) && ran=$((ran + 1))
  total_runs=$((total_runs + runs))
  total_crashes=$((total_crashes + ${#found[@]}))
  corpus_size=$(find "${corpus[0]}" -type f | wc -l)
  summary+=("$(printf 'fuzz: %-20s %12d runs in %4d s, corpus %6d  %s' \
    "$target" "$runs" "$seconds" "$corpus_size" "$status")")
done

if ((${#summary[@]} > 0)); then
  printf '%s\n' "${summary[@]}"
fi
if ((ran < ${#present[@]})); then
  echo "fuzz: only $ran of the ${#present[@]} targets in fuzz/fuzz_targets/ ran" >&2
fi
printf 'fuzz: %d targets, %d runs, %d crashes, %d failed\n' \
  "${#present[@]}" "$total_runs" "$total_crashes" "${#failed[@]}"
((${#present[@]} > 0 && ran >= ${#present[@]} && ${#failed[@]} == 0))
