#!/usr/bin/env bash
# Regenerates tests/fixtures/storage: rooms' SQLite files as earlier releases
# of the worker wrote them, which tests/tests/upgrade.rs opens with this
# release. For each release: a scratch worktree of its commit (outside the
# repository), its own `make worker`, `wrangler dev --persist-to` on a fresh
# directory, real HTTP and WebSocket traffic (scripts/storage-fixtures.mjs),
# then the rooms' files are copied out. Not part of `make test`: every
# release is built, which takes minutes.
#
#   scripts/storage-fixtures.sh [schema-0 schema-1 schema-2 schema-3]
#
# The scratch directory (worktrees, one shared cargo target, state, logs) is
# STORAGE_FIXTURES_SCRATCH, by default $TMPDIR/roomcast-storage-fixtures; it
# is kept, so a second run rebuilds nothing (remove its worktrees with
# `git worktree remove`). Needs what `make worker` needs, node and the
# sqlite3 command line tool.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
scratch=${STORAGE_FIXTURES_SCRATCH:-${TMPDIR:-/tmp}/roomcast-storage-fixtures}
fixtures=$repo/tests/fixtures/storage
# The secret the end-to-end tests start the worker with (tests/src/lib.rs).
secret=e2e-test-secret-not-for-production
# Every release: what it is called here, its commit, and its phases (a
# scenario of scripts/storage-fixtures.mjs and the worker's variables for it).
declare -A commit=(
  [schema-0]=92d7a6f # the first release with rooms
  [schema-1]=632087a # the trace column
  [schema-2]=daa7539 # the idempotency table dropped; the last release before the ring
  [schema-3]=b8eb2b2 # the ring and outbox, moving only non-Kafka messages out of the ring
)
declare -A phases=(
  [schema-0]="schema-0:"
  [schema-1]="schema-1:"
  [schema-2]="schema-2:"
  [schema-3]="schema-3: schema-3-hole:BRIDGE=on"
)
common_vars=(HISTORY_LIMIT=5 RATE_PER_SEC=1000 RATE_BURST=1000)

command -v sqlite3 >/dev/null || { echo "needs the sqlite3 command line tool (Debian: sqlite3)" >&2; exit 1; }
mkdir -p "$scratch"
export CARGO_TARGET_DIR=$scratch/target WRANGLER_SEND_METRICS=false

wrangler_pid=
stop_wrangler() {
  if [ -n "$wrangler_pid" ]; then
    kill -TERM -- "-$wrangler_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 -- "-$wrangler_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$wrangler_pid" 2>/dev/null || true
    wait "$wrangler_pid" 2>/dev/null || true
    wrangler_pid=
  fi
}
trap stop_wrangler EXIT

free_port() {
  node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'
}

# Starts the release in $1 on state directory $2 with the variables $3...,
# runs scenario $scenario against it, stops it.
run_phase() {
  local tree=$1 state=$2 scenario=$3
  shift 3
  local port log=$scratch/$scenario.log
  port=$(free_port)
  local args=(dev --ip 127.0.0.1 --port "$port" --persist-to "$state" --var "JWT_SECRET:$secret")
  for var in "${common_vars[@]}" "$@"; do args+=(--var "${var%%=*}:${var#*=}"); done
  (cd "$tree" && exec setsid node_modules/.bin/wrangler "${args[@]}") >"$log" 2>&1 </dev/null &
  wrangler_pid=$!
  local up=
  for _ in $(seq 300); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null; then up=1; break; fi
    kill -0 "$wrangler_pid" 2>/dev/null || break
    sleep 0.5
  done
  [ -n "$up" ] || { tail -40 "$log" >&2; echo "$scenario: the worker did not start (log: $log)" >&2; exit 1; }
  node "$repo/scripts/storage-fixtures.mjs" "$scenario" "http://127.0.0.1:$port" "$secret"
  stop_wrangler
}

# One line per room file: file, room, schema, epoch, head, cursor, bridged, stored seqs.
describe() {
  local file=$1 table
  if [ "$(sqlite3 "$file" "SELECT COUNT(*) FROM sqlite_master WHERE name = 'messages'")" = 1 ]; then
    table="SELECT seq, origin FROM messages"
  else
    table="SELECT seq, origin FROM outbox UNION ALL SELECT seq, origin FROM ring"
  fi
  sqlite3 -separator ' | ' "$file" "
    SELECT (SELECT value FROM meta WHERE key = 'room'),
           COALESCE((SELECT value FROM meta WHERE key = 'schema'), '0'),
           COALESCE((SELECT value FROM meta WHERE key = 'cursor'), '0'),
           CASE WHEN EXISTS (SELECT 1 FROM meta WHERE key = 'bridged') THEN 'yes' ELSE 'no' END,
           (SELECT GROUP_CONCAT(CASE origin WHEN 'kafka' THEN seq || 'k' ELSE seq END, ' ')
              FROM ($table ORDER BY seq))"
}

generate() {
  local name=$1 rev=${commit[$1]}
  local tree=$scratch/$rev state=$scratch/state-$name out=$fixtures/$name
  if [ ! -d "$tree" ]; then
    git -C "$repo" worktree add --detach "$tree" "$rev"
  fi
  echo "== $name: building $rev"
  (cd "$tree" && nice -n 10 make worker) >"$scratch/build-$name.log" 2>&1 \
    || { tail -40 "$scratch/build-$name.log" >&2; exit 1; }
  rm -rf "$state"
  mkdir -p "$state"
  for phase in ${phases[$name]}; do
    local scenario=${phase%%:*} vars=${phase#*:}
    echo "== $name: $scenario ${vars:-}"
    # shellcheck disable=SC2086 # the phase's variables, one word each
    run_phase "$tree" "$state" "$scenario" ${vars//,/ }
  done
  local rooms=$state/v3/do/roomcast-Room
  rm -rf "$out"
  mkdir -p "$out/v3/do/roomcast-Room"
  # The rooms' own files (named by their object ids); not the namespace's
  # metadata.sqlite (alarm schedule), so no old alarm fires at a random time.
  for file in "$rooms"/[0-9a-f]*[0-9a-f].sqlite; do
    # workerd writes through a WAL: fold it into the file, so the fixture is one file.
    sqlite3 "$file" "PRAGMA wal_checkpoint(TRUNCATE)" >/dev/null
    cp "$file" "$out/v3/do/roomcast-Room/"
  done
  {
    echo "# $name: rooms as commit $rev wrote them"
    echo
    echo "Written by \`$(git -C "$repo" log -1 --format='%h %as' "$rev")\` ($(git -C "$repo" log -1 --format=%s "$rev" | cut -c1-100)…),"
    echo "built with its own \`make worker\` and run under \`wrangler dev --persist-to\` with"
    echo "\`${common_vars[*]}\`, driven by \`scripts/storage-fixtures.mjs\` (phases:"
    echo "\`${phases[$name]}\`): regenerate with \`scripts/storage-fixtures.sh $name\`."
    echo "\`v3/do/roomcast-Room/\` is that run's \`--persist-to\` layout, the rooms' files only."
    echo
    echo "| file | room | schema | cursor | bridged | stored seqs (k: from Kafka) |"
    echo "| --- | --- | --- | --- | --- | --- |"
    for file in "$out"/v3/do/roomcast-Room/*.sqlite; do
      echo "| \`$(basename "$file" | cut -c1-12)…\` | $(describe "$file") |"
    done
  } >"$out/README.md"
  echo "== $name: $(du -sh "$out" | cut -f1) in $out"
}

for name in "${@:-schema-0 schema-1 schema-2 schema-3}"; do
  for one in $name; do
    [ -n "${commit[$one]:-}" ] || { echo "unknown release $one (one of: ${!commit[*]})" >&2; exit 2; }
    generate "$one"
  done
done
