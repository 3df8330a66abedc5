// When the client resets its backoff: only once a connection has proved
// itself (open `stableAfterMs`, its catch_up paged), never on `welcome`
// alone. A scripted socket and node's mock timers stand in for the room, so
// every delay is exact: with `random` at its top, each delay is its cap
// minus one, which shows how far the backoff has grown.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RoomcastClient } from '../src/index.js';

const STABLE_MS = 5000;

/** A WebSocket the test drives: it opens, welcomes and closes when told. */
class ScriptedSocket {
  static opened = [];

  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.sent = [];
    ScriptedSocket.opened.push(this);
  }

  send(text) {
    this.sent.push(text);
  }

  close() {
    this.readyState = 3;
  }

  welcome(extra = {}) {
    this.readyState = 1;
    const frame = { type: 'welcome', room: 'r', conn_id: 'c_1', epoch: 'e_1', head: 0, recovered: true };
    this.onmessage?.({ data: JSON.stringify({ ...frame, heartbeat_ms: 30_000, ...extra }) });
  }

  serverClose(code = 1011) {
    this.readyState = 3;
    this.onclose?.({ code, reason: 'scripted' });
  }
}

/** A client on scripted sockets, and the reconnect delays it chose. */
function scripted(t) {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'Date'] });
  ScriptedSocket.opened = [];
  const client = new RoomcastClient({
    url: 'http://rooms.test',
    room: 'r',
    token: 'not.a.jwt',
    since: 0,
    epoch: 'e_1',
    WebSocket: ScriptedSocket,
    stableAfterMs: STABLE_MS,
    backoff: { initialMs: 100, maxMs: 10_000, random: () => 0.999999 },
  });
  t.after(() => client.close());
  const delays = [];
  client.addEventListener('state', (e) => {
    if (e.detail.state === 'reconnecting') delays.push(e.detail.delayMs);
  });
  /** The socket now open, and one that waits out the last delay to get the next. */
  const socket = () => ScriptedSocket.opened.at(-1);
  const reconnect = () => {
    const before = ScriptedSocket.opened.length;
    t.mock.timers.tick(delays.at(-1));
    assert.equal(ScriptedSocket.opened.length, before + 1, 'the client reconnected after its delay');
    return socket();
  };
  return { client, delays, socket, reconnect };
}

/** Lets the client's pending promise callbacks (its history fetches) run. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

/** A `fetch` stand-in answering history pages with `seqs`. */
function page(seqs) {
  const messages = seqs.map((seq) => ({ room: 'r', id: `m${seq}`, seq, ts: 0, sender: 's', origin: 'http', data: seq }));
  return { ok: true, status: 200, json: async () => ({ room: 'r', epoch: 'e_1', head: seqs.at(-1), messages, truncated: false }) };
}

test('a connection that fails right after welcome backs off like any failing one', (t) => {
  const { delays, socket, reconnect } = scripted(t);
  socket().welcome();
  for (let i = 0; i < 5; i += 1) {
    t.mock.timers.tick(100);
    socket().serverClose();
    reconnect().welcome();
  }
  assert.deepEqual(delays, [99, 199, 399, 799, 1599]);
});

test('a connection that stayed open stableAfterMs starts the backoff over', (t) => {
  const { delays, socket, reconnect } = scripted(t);
  socket().welcome();
  socket().serverClose();
  reconnect().welcome();
  socket().serverClose();
  reconnect().welcome();
  t.mock.timers.tick(STABLE_MS - 1);
  socket().serverClose();
  reconnect().welcome();
  t.mock.timers.tick(STABLE_MS);
  socket().serverClose();
  assert.deepEqual(delays, [99, 199, 399, 99], 'one ms short proves nothing; the full time does');
});

test('catch_up paging that fails keeps backing off instead of reconnecting hot', async (t) => {
  const { delays, socket, reconnect } = scripted(t);
  const fetches = t.mock.method(globalThis, 'fetch', async () => {
    throw new TypeError('Failed to fetch');
  });
  socket().welcome({ head: 50, catch_up: { since: 0, until: 50 } });
  await settle();
  for (let i = 0; i < 4; i += 1) {
    reconnect().welcome({ head: 50, catch_up: { since: 0, until: 50 } });
    await settle();
  }
  assert.equal(fetches.mock.callCount(), 5, 'every connect tried to page');
  assert.deepEqual(delays, [99, 199, 399, 799, 1599]);
});

test('a connection proves itself only once its catch_up is paged, not by time alone', async (t) => {
  const { client, delays, socket, reconnect } = scripted(t);
  const delivered = [];
  client.addEventListener('message', (e) => delivered.push(e.detail.seq));
  let answer;
  t.mock.method(globalThis, 'fetch', () => new Promise((resolve) => (answer = resolve)));
  socket().welcome();
  socket().serverClose();
  reconnect().welcome({ head: 2, catch_up: { since: 0, until: 2 } });
  t.mock.timers.tick(2 * STABLE_MS);
  socket().serverClose();
  assert.deepEqual(delays, [99, 199], 'open long enough, but still paging');

  reconnect().welcome({ head: 2, catch_up: { since: 0, until: 2 } });
  t.mock.timers.tick(STABLE_MS);
  answer(page([1, 2]));
  await settle();
  assert.deepEqual(delivered, [1, 2]);
  socket().serverClose();
  assert.deepEqual(delays, [99, 199, 99], 'aged and paged: the backoff starts over');
});
