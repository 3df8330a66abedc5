#!/usr/bin/env bash
# `make mutants`: cargo-mutants over the files that keep roomcast's delivery
# guarantees, one file at a time, then one line per file with its caught,
# missed, timed-out and unviable mutants and the share of viable ones caught.
#
#   scripts/mutants.sh            every file in FILES below
#   scripts/mutants.sh FILE...    only these (paths from the repository root)
#
# Each file is mutated with only its own crate's tests (roomcast-protocol's
# unit and property tests, roomcast-bridge's unit tests; never the end-to-end
# crate, which needs a worker and a broker), on one job at low priority: the
# machine has two cores and shares them. Doc tests are skipped: they test no
# rule.
#
# Everything it writes is outside the checkout, under MUTANTS_DIR
# (~/.cache/roomcast/mutants): <file>/mutants.out (cargo-mutants' own
# caught.txt, missed.txt, timeout.txt, unviable.txt and a log per mutant)
# and one target directory that every run shares, so dependencies (librdkafka
# among them) build once, not once per file. Builds keep no debug info: a
# mutant is a rebuild and a relink of every test binary, and the relink is
# most of it.
#
# Exits non-zero when a run itself failed (its unmutated tree did not build
# or pass its tests); missed mutants are listed at the end, not failed on.
set -euo pipefail
cd "$(dirname "$0")/.."

FILES=(
  protocol/src/rate.rs
  protocol/src/dedupe.rs
  protocol/src/history.rs
  protocol/src/lifecycle.rs
  protocol/src/ring.rs
  protocol/src/shard.rs
  protocol/src/policy.rs
  protocol/src/wire.rs
  bridge/src/offsets.rs
  bridge/src/lane.rs
  bridge/src/inbound.rs
)
if (($# > 0)); then
  FILES=("$@")
fi

out=${MUTANTS_DIR:-$HOME/.cache/roomcast/mutants}
# A test run this long is a mutant that loops: about ten times the crate's
# test time on a busy machine (a mutant's build is not bounded). The
# protocol's tests take seconds, the bridge's over ten; a looping mutant
# costs the whole timeout, so each crate gets its own.
timeout_protocol=${MUTANTS_TIMEOUT:-30}
timeout_bridge=${MUTANTS_TIMEOUT:-120}
export CARGO_TARGET_DIR=$out/target
export CARGO_PROFILE_DEV_DEBUG=false
export CARGO_TERM_COLOR=never

# One line of the summary: a name, the four counts, seconds. A viable
# mutant built; a timed-out one made the tests hang (a loop that no longer
# ends), which fails them too, so the second share counts it as found.
line() {
  awk -v name="$1" -v c="$2" -v m="$3" -v t="$4" -v u="$5" -v s="$6" 'BEGIN {
    viable = c + m + t
    caught = viable ? sprintf("%.1f %%", 100 * c / viable) : "-"
    found = viable ? sprintf("%.1f %%", 100 * (c + t) / viable) : "-"
    printf "mutants: %-26s %4d caught %3d missed %3d timeout %3d unviable  of viable: %7s caught, %7s caught or timed out  %5d s\n", name, c, m, t, u, caught, found, s
  }'
}

summary=()
failed=()
totals=(0 0 0 0)
started_all=$SECONDS
for file in "${FILES[@]}"; do
  case $file in
    protocol/*) package=roomcast-protocol timeout=$timeout_protocol targets=(--lib --tests) ;;
    # The bridge's tests are all in its library (its binary holds none, and
    # it has no integration tests): linking the binary's empty test harness
    # against librdkafka for every mutant would only cost time.
    bridge/*) package=roomcast-bridge timeout=$timeout_bridge targets=(--lib) ;;
    *) echo "mutants: $file is in neither protocol/ nor bridge/" >&2; exit 2 ;;
  esac
  test -f "$file" || { echo "mutants: no such file: $file" >&2; exit 2; }
  name=${file//\//_}
  name=${name%.rs}
  dir=$out/$name
  rm -rf "$dir"
  mkdir -p "$dir"
  started=$SECONDS
  echo "mutants: $file ($package)"
  exited=0
  nice -n 19 cargo mutants --package "$package" --file "$file" --jobs 1 \
    --timeout "$timeout" --output "$dir" -- "${targets[@]}" || exited=$?
  seconds=$((SECONDS - started))
  # 0: all caught, 2: some missed, 3: some timed out; anything else is a
  # failed run (its baseline, or cargo-mutants itself).
  case $exited in
    0 | 2 | 3) ;;
    *) failed+=("$file"); summary+=("$(printf 'mutants: %-26s FAILED (exit %d), see %s' "$file" "$exited" "$dir/mutants.out")"); continue ;;
  esac
  counts=()
  for outcome in caught missed timeout unviable; do
    counts+=("$(wc -l < "$dir/mutants.out/$outcome.txt")")
  done
  for i in 0 1 2 3; do
    totals[i]=$((totals[i] + counts[i]))
  done
  summary+=("$(line "$file" "${counts[@]}" "$seconds")")
done

printf '%s\n' "${summary[@]}"
line total "${totals[@]}" "$((SECONDS - started_all))"
for file in "${FILES[@]}"; do
  name=${file//\//_}
  missed=$out/${name%.rs}/mutants.out/missed.txt
  if [[ -s $missed ]]; then
    echo "mutants: missed in $file:"
    sed 's/^/  /' "$missed"
  fi
done
((${#failed[@]} == 0))
