#!/usr/bin/env bash
# `make dev`: the worker under `wrangler dev` on 127.0.0.1:8787 and the bridge
# with an embedded Kafka on 127.0.0.1:9092 (metrics on 127.0.0.1:9464).
# `make dev BROKER=amqp` relays to RabbitMQ instead: a private node of Debian's
# rabbitmq-server (when installed) on 127.0.0.1:5672, its state in a temp
# dir, with its own epmd, all stopped with the rest.
#
# Each service runs in its own session (setsid), so one signal to its process
# group reaches wrangler's workerd children too; the exit trap sends it, on
# Ctrl-C, on any failure, and when either service dies, so nothing is left
# running. `make dev` has built both and created .dev.vars before this runs.
#
# The worker refuses tokens in URLs (QUERY_TOKENS=off): URLs land in logs,
# browser history and Referer headers, and nothing here needs them (the
# demo page link carries its token in the fragment, which is never sent).
set -euo pipefail
cd "$(dirname "$0")/.."

WORKER=127.0.0.1:8787
KAFKA=127.0.0.1:9092
AMQP=127.0.0.1:5672
EPMD_PORT=4370
RABBITMQ=${ROOMCAST_RABBITMQ:-/usr/lib/rabbitmq/bin/rabbitmq-server}
BROKER=${BROKER:-kafka}
METRICS=127.0.0.1:9464
ROOM=chat.lobby
BRIDGE=target/release/roomcast-bridge
groups=()

stop_all() {
  trap - EXIT INT TERM
  ((${#groups[@]})) || return 0
  echo "stopping..." >&2
  for g in "${groups[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for g in "${groups[@]}"; do kill -0 -- "-$g" 2>/dev/null && alive=1; done
    ((alive)) || return 0
    sleep 0.1
  done
  for g in "${groups[@]}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
}
# A RabbitMQ node's state (BROKER=amqp) goes with it.
rabbit=
trap 'stop_all; [[ -z $rabbit ]] || rm -rf "$rabbit"' EXIT
trap 'exit 130' INT TERM

# Runs a service in a session of its own with its output prefixed by name.
# The prefixer ignores INT and TERM, so it keeps forwarding what the service
# logs while it shuts down, and ends at the service's end of output.
service() {
  local name=$1
  shift
  setsid bash -c 'name=$1; shift; "$@" 2>&1 < /dev/null | (trap "" INT TERM; exec sed -u "s/^/[$name] /")' \
    service "$name" "$@" &
  groups+=($!)
}

port_free() {
  ! (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null
}

wait_healthy() {
  local name=$1 url=$2 group=$3
  for _ in $(seq 480); do
    curl -sf -o /dev/null --max-time 2 "$url" && return 0
    kill -0 -- "-$group" 2>/dev/null || { echo "$name exited during startup" >&2; exit 1; }
    sleep 0.25
  done
  echo "$name did not become healthy at $url within 120 s" >&2
  exit 1
}

case $BROKER in
  kafka) BROKER_ADDR=$KAFKA ;;
  amqp)
    BROKER_ADDR=$AMQP
    [[ -x $RABBITMQ ]] || { echo "BROKER=amqp needs RabbitMQ: apt-get install rabbitmq-server (or set ROOMCAST_RABBITMQ)" >&2; exit 1; }
    ;;
  *) echo "BROKER=$BROKER: use kafka or amqp" >&2; exit 1 ;;
esac

for addr in "$WORKER" "$BROKER_ADDR" "$METRICS"; do
  port_free "$addr" || { echo "$addr is in use: is another make dev running?" >&2; exit 1; }
done
secret=$(sed -n 's/^JWT_SECRET=//p' .dev.vars)
[[ -n $secret ]] || { echo ".dev.vars has no JWT_SECRET" >&2; exit 1; }

service worker node_modules/.bin/wrangler dev --ip "${WORKER%:*}" --port "${WORKER#*:}" --var BRIDGE:on \
  --var QUERY_TOKENS:off
wait_healthy worker "http://$WORKER/healthz" "${groups[0]}"

if [[ $BROKER == amqp ]]; then
  # A private node: its own epmd (in the foreground, in this script's
  # process groups), ports and state; guest may connect from loopback.
  rabbit=$(mktemp -d)
  echo "[].
" > "$rabbit/enabled_plugins"
  : > "$rabbit/rabbitmq.conf"
  service epmd epmd -port "$EPMD_PORT"
  service rabbitmq env RABBITMQ_NODENAME=roomcast-dev@localhost RABBITMQ_NODE_IP_ADDRESS="${AMQP%:*}" \
    RABBITMQ_NODE_PORT="${AMQP#*:}" \
    RABBITMQ_DIST_PORT=25673 ERL_EPMD_PORT="$EPMD_PORT" RABBITMQ_MNESIA_BASE="$rabbit/mnesia" \
    RABBITMQ_LOG_BASE="$rabbit/log" RABBITMQ_ENABLED_PLUGINS_FILE="$rabbit/enabled_plugins" \
    RABBITMQ_CONFIG_FILE="$rabbit/rabbitmq" HOME="$rabbit" "$RABBITMQ"
  for _ in $(seq 240); do
    (exec 3<>"/dev/tcp/${AMQP%:*}/${AMQP#*:}") 2>/dev/null && break
    sleep 0.25
  done
  service bridge "$BRIDGE" --worker-url "http://$WORKER" --jwt-secret "$secret" --broker amqp \
    --amqp-url "amqp://$AMQP/%2f" --metrics-addr "$METRICS"
  watch="rabbitmqadmin is not installed with the server: read roomcast.events by binding a queue to it (any AMQP client)"
  to_room="publish to exchange roomcast.inbound with routing key $ROOM and a JSON body"
else
  service bridge "$BRIDGE" --worker-url "http://$WORKER" --jwt-secret "$secret" --embedded-kafka \
    --metrics-addr "$METRICS"
  watch="kcat -b $KAFKA -C -t roomcast.events"
  to_room="kcat -b $KAFKA -P -t roomcast.inbound -K:     then type lines like  $ROOM:{\"text\":\"hello from kafka\"}"
fi
wait_healthy bridge "http://$METRICS/healthz" "${groups[-1]}"

token=$("$BRIDGE" --jwt-secret "$secret" token --sub dev --presence '*' --ttl 12h)
cat <<INFO

roomcast is running. Ctrl-C stops everything.

  demo page    http://$WORKER/?room=$ROOM#token=$token
  join         ROOMCAST_TOKEN=$token node clients/js/bin/roomcast-join.js http://$WORKER $ROOM
  broker       $BROKER at $BROKER_ADDR
  watch it     $watch
  to the room  $to_room
  metrics      http://$METRICS/metrics   (dashboard: deploy/grafana/roomcast.json)
  more tokens  make token SUB=alice ROOMS='chat.*' PUBLISH='chat.*' TTL=1h

INFO

# Whichever service stops first takes the other down with it.
wait -n "${groups[@]}" || true
echo "a service exited" >&2
exit 1
