#!/usr/bin/env bash
# What every suite of `make test` ran, held against .ci/minimums, so that a
# suite that quietly tests nothing (a test file no longer compiled or found,
# a runner given a path it no longer reads, fuzzing with no targets) fails.
#
#   scripts/test-counts.sh run SUITE CMD...  runs CMD, showing its output; reads
#       the counts its runners print (cargo's and wasm-bindgen-test-runner's
#       `test result:` lines, node's `ℹ pass` summary, fuzz.sh's closing line);
#       keeps them in $TEST_COUNTS_DIR/SUITE; fails, naming SUITE, when CMD
#       fails, when fewer tests ran than SUITE's minimum, or when more were
#       ignored, skipped, cancelled or todo than it may skip
#   scripts/test-counts.sh total  prints each suite's counts and the sum over
#       every suite (fuzz targets count as tests), whatever the suites' outcome
#
# TEST_COUNTS_DIR defaults to build/test-counts; .ci/run gives each run a
# fresh one, so that a suite that never started shows as not run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
minimums=$root/.ci/minimums
dir=${TEST_COUNTS_DIR:-$root/build/test-counts}
suites=(test-unit test-wasm test-fuzz test-e2e test-js)

usage() {
  echo "usage: scripts/test-counts.sh run SUITE CMD... | total" >&2
  exit 2
}

# Prints "passed failed ignored skipped cancelled" and, for the fuzz run,
# a note ("R runs, C crashes"), from a runner's output on stdin.
read_counts() {
  awk '
    { gsub(/\033\[[0-9;]*m/, "") }
    # cargo test and wasm-bindgen-test-runner, one line per test binary:
    # "test result: ok. 88 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; ..."
    /^test result:/ {
      for (i = 2; i <= NF; i++) {
        word = $(i); sub(/[;,.]$/, "", word)
        if (word == "passed") p += $(i - 1)
        else if (word == "failed") f += $(i - 1)
        else if (word == "ignored") ig += $(i - 1)
        # Left out by a name filter: not run, like an ignored test.
        else if (word == "filtered") ig += $(i - 1)
      }
    }
    # node --test, once at the end: pass, fail, cancelled, skipped and todo
    # are disjoint and add up to "tests".
    /^ℹ (pass|fail|cancelled|skipped|todo) [0-9]+$/ {
      if ($2 == "pass") p += $3
      else if ($2 == "fail") f += $3
      else if ($2 == "cancelled") c += $3
      else s += $3
    }
    # scripts/fuzz.sh, last: "fuzz: 7 targets, 350000 runs, 0 crashes, 0 failed",
    # each target a test.
    /^fuzz: [0-9]+ targets, [0-9]+ runs, [0-9]+ crashes, [0-9]+ failed$/ {
      p += $2 - $8; f += $8
      note = $4 " runs, " $6 " crashes"
    }
    END { printf "%d %d %d %d %d %s\n", p, f, ig, s, c, note }
  '
}

# "minimum may-skip" of a suite from .ci/minimums, or nothing.
minimum_of() {
  awk -v suite="$1" '!/^#/ && $1 == suite { print $2 + 0, $3 + 0; exit }' "$minimums"
}

run() {
  local suite=$1
  shift
  (($# > 0)) || usage
  local limits
  limits=$(minimum_of "$suite")
  if [[ -z $limits ]]; then
    echo "$suite: no minimum in .ci/minimums" >&2
    exit 1
  fi
  local minimum may_skip
  read -r minimum may_skip <<<"$limits"

  local status=0
  # Global: the trap runs after this function has returned.
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  "$@" 2>&1 | tee "$log" || status=${PIPESTATUS[0]}

  local counts passed failed ignored skipped cancelled note
  counts=$(read_counts <"$log")
  read -r passed failed ignored skipped cancelled note <<<"$counts"
  local ran=$((passed + failed)) unrun=$((ignored + skipped + cancelled)) problems=()
  ((status == 0)) || problems+=("exited with $status")
  ((ran >= minimum)) || problems+=("ran $ran tests, fewer than its minimum of $minimum in .ci/minimums")
  ((unrun <= may_skip)) ||
    problems+=("left $unrun tests unrun (ignored, skipped, cancelled, todo), more than the $may_skip it may in .ci/minimums")

  # The record `total` reads: the counts, then the verdict.
  local line verdict=ok
  line="$passed passed, $failed failed, $ignored ignored, $skipped skipped, $cancelled cancelled${note:+ ($note)}"
  if ((${#problems[@]} > 0)); then
    verdict=$(printf '%s; ' "${problems[@]}")
    verdict="FAILED: ${verdict%; }"
  fi
  mkdir -p "$dir"
  printf '%s\n%s\n%s\n' "$passed $failed $ignored $skipped $cancelled" "$line" "$verdict" >"$dir/$suite"

  echo "$suite: $line"
  if [[ $verdict != ok ]]; then
    echo "$suite $verdict" >&2
    exit $((status == 0 ? 1 : status))
  fi
}

total() {
  local suite passed=0 failed=0 ignored=0 skipped=0 cancelled=0
  local p f i s c line verdict
  for suite in "${suites[@]}"; do
    if [[ ! -f $dir/$suite ]]; then
      echo "$suite: not run"
      continue
    fi
    {
      read -r p f i s c
      read -r line
      read -r verdict
    } <"$dir/$suite"
    echo "$suite: $line: $verdict"
    passed=$((passed + p)) failed=$((failed + f)) ignored=$((ignored + i))
    skipped=$((skipped + s)) cancelled=$((cancelled + c))
  done
  echo "all: $passed passed, $failed failed, $ignored ignored, $skipped skipped, $cancelled cancelled"
  # The closing line CI reads, with everything that did not run as skipped.
  echo "ci: $passed passed, $failed failed, $((ignored + skipped + cancelled)) skipped"
}

case ${1:-} in
  run) shift; (($# >= 1)) || usage; run "$@" ;;
  total) total ;;
  *) usage ;;
esac
