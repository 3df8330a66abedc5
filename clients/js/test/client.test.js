// The client against the real worker under `wrangler dev`.
//
// The worker runs with IDLE_TIMEOUT_MS=2000 and HEARTBEAT_MS=1000. A client
// told to ping every 600 s is closed by the server (4008) about every two
// seconds, which is how these tests force server-side closes in the middle
// of a stream. Clients that must stay up ping every 500 ms.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { RoomcastClient } from '../src/index.js';
import { Worker, token, room, nextEvent } from '../../../tests/js/worker.mjs';

let worker;
before(async () => {
  worker = await Worker.start({
    IDLE_TIMEOUT_MS: '2000',
    HEARTBEAT_MS: '1000',
    RATE_PER_SEC: '1000',
    RATE_BURST: '1000',
    ROOM_RATE_PER_SEC: '100000',
    HISTORY_LIMIT: '2000',
  });
});
after(() => worker?.stop());

function client(options) {
  return new RoomcastClient({
    url: worker.url(),
    token: token(),
    WebSocket,
    backoff: { initialMs: 100, maxMs: 1000 },
    ...options,
  });
}

function record(c) {
  const seen = { messages: [], welcomes: [], states: [], resyncs: [], errors: [] };
  c.addEventListener('message', (e) => seen.messages.push(e.detail));
  c.addEventListener('welcome', (e) => seen.welcomes.push(e.detail));
  c.addEventListener('state', (e) => seen.states.push(e.detail));
  c.addEventListener('resync', (e) => seen.resyncs.push(e.detail));
  c.addEventListener('error', (e) => seen.errors.push(e.detail));
  return seen;
}

/** Resolves once `seen.messages` holds `n` messages, or rejects after `ms`. */
function messagesArrive(c, seen, n, ms) {
  if (seen.messages.length >= n) return Promise.resolve();
  return nextEvent(c, 'message', ms, () => seen.messages.length >= n);
}

test('publishes are acknowledged once and come back in order', async (t) => {
  const name = room('js.order');
  const c = client({ room: name, heartbeatMs: 500 });
  t.after(() => c.close());
  const seen = record(c);
  await nextEvent(c, 'welcome');
  const acks = await Promise.all(Array.from({ length: 50 }, (_, i) => c.publish({ i })));
  await messagesArrive(c, seen, 50, 10_000);
  assert.deepEqual(acks.map((a) => a.seq), Array.from({ length: 50 }, (_, i) => i + 1));
  assert.ok(acks.every((a) => !a.duplicate));
  assert.deepEqual(seen.messages.map((m) => m.id), acks.map((a) => a.id));
  assert.deepEqual(seen.messages.map((m) => m.data.i), Array.from({ length: 50 }, (_, i) => i));
  assert.ok(seen.messages.every((m) => m.origin === 'ws' && m.sender === 'tester' && m.room === name));
  assert.equal(c.pending, 0);
});

test('server-side closes in the middle of a stream lose nothing and duplicate nothing', async (t) => {
  const name = room('js.stream');
  const subscriber = client({ room: name, heartbeatMs: 600_000 });
  t.after(() => subscriber.close());
  const seen = record(subscriber);
  await nextEvent(subscriber, 'welcome');
  const total = 150;
  const writer = token({ sub: 'writer' });
  for (let i = 1; i <= total; i += 1) {
    await worker.publish(name, writer, { i });
    await new Promise((resolve) => setTimeout(resolve, 40));
  }
  await messagesArrive(subscriber, seen, total, 30_000);
  assert.deepEqual(seen.messages.map((m) => m.seq), Array.from({ length: total }, (_, i) => i + 1));
  assert.deepEqual(seen.messages.map((m) => m.data.i), Array.from({ length: total }, (_, i) => i + 1));
  const closes = seen.states.filter((s) => s.state === 'reconnecting');
  assert.ok(closes.length >= 1, `the server closed the subscriber mid-stream (${closes.length} times)`);
  assert.ok(
    closes.every((s) => s.code === 4008 || s.reason === 'close handshake stalled'),
    `closed for idleness: ${JSON.stringify(closes)}`,
  );
  assert.ok(seen.welcomes.slice(1).every((w) => w.recovered), 'every reconnect resumed');
  assert.equal(seen.resyncs.length, 0);
  assert.equal(subscriber.reconnects, seen.welcomes.length - 1);
});

test('a room that cannot resume says resync and continues after its head', async (t) => {
  const name = room('js.resync');
  const writer = token({ sub: 'writer' });
  for (let i = 1; i <= 3; i += 1) await worker.publish(name, writer, { i });
  const c = client({ room: name, heartbeatMs: 500, since: 7, epoch: 'e_from_another_life' });
  t.after(() => c.close());
  const seen = record(c);
  const resync = await nextEvent(c, 'resync');
  assert.deepEqual(
    { since: resync.since, previousEpoch: resync.previousEpoch, head: resync.head },
    { since: 7, previousEpoch: 'e_from_another_life', head: 3 },
  );
  assert.equal(c.recovered, false);
  assert.equal(c.lastSeq, 3);
  const history = await c.history({ since: 0 });
  assert.deepEqual(history.messages.map((m) => m.seq), [1, 2, 3]);
  await worker.publish(name, writer, { i: 4 });
  await messagesArrive(c, seen, 1, 10_000);
  assert.equal(seen.messages[0].seq, 4);
});

test('the token is refreshed when the room warns of expiry, without reconnecting', async (t) => {
  const name = room('js.refresh');
  let refreshed = 0;
  const c = client({
    room: name,
    heartbeatMs: 500,
    token: token({ ttlSecs: 4 }),
    refreshBeforeMs: 3000,
    refreshToken: async () => {
      refreshed += 1;
      return token({ ttlSecs: 3600 });
    },
  });
  t.after(() => c.close());
  const seen = record(c);
  const welcome = await nextEvent(c, 'welcome');
  const renewed = await nextEvent(c, 'token', 10_000);
  assert.equal(refreshed, 1);
  assert.ok(renewed.exp > welcome.exp + 3000, `new exp ${renewed.exp} after old ${welcome.exp}`);
  assert.equal(c.state, 'open');
  assert.equal(seen.states.filter((s) => s.state === 'reconnecting').length, 0);
  const ack = await c.publish({ after: 'refresh' });
  assert.equal(ack.seq, 1);
});

test('pinging more often than the idle timeout keeps the connection', async (t) => {
  const c = client({ room: room('js.heartbeat'), heartbeatMs: 500 });
  t.after(() => c.close());
  await nextEvent(c, 'welcome');
  await assert.rejects(
    nextEvent(c, 'state', 5000, (s) => s.state !== 'open'),
    /no state event within/,
    'no close in 2.5 idle timeouts',
  );
  assert.equal(c.reconnects, 0);
});

test('a refused publish rejects its promise and emits an error', async (t) => {
  const name = room('js.forbidden');
  const c = client({ room: name, heartbeatMs: 500, token: token({ publish: [] }) });
  t.after(() => c.close());
  await nextEvent(c, 'welcome');
  const error = nextEvent(c, 'error');
  await assert.rejects(c.publish({ nope: true }), (e) => e.code === 'forbidden');
  assert.equal((await error).code, 'forbidden');
  assert.equal(c.pending, 0);
  assert.equal(c.state, 'open', 'an error frame does not close the connection');
});

test('close() stops for good and rejects what is pending', async () => {
  const c = client({ room: room('js.close'), heartbeatMs: 500 });
  const closed = nextEvent(c, 'state', 10_000, (s) => s.state === 'closed');
  const publish = c.publish({ never: 'sent' });
  c.close();
  await closed;
  await assert.rejects(publish, /client closed/);
  await assert.rejects(c.publish({}), /client is closed/);
});

test('a resume too long to replay is paged from history, then live messages follow', async (t) => {
  const name = room('js.catchup');
  const writer = token({ sub: 'writer' });
  for (let start = 0; start < 1200; start += 400) {
    // Each batch from its own subject: one subject's burst is 1000.
    const messages = Array.from({ length: 400 }, (_, i) => ({ data: { n: start + i } }));
    await worker.publishBatch(name, token({ sub: `bulk-${start}` }), messages);
  }
  const page = await worker.history(name, writer, 0);
  const c = client({ room: name, heartbeatMs: 500, since: 0, epoch: page.epoch });
  t.after(() => c.close());
  const seen = record(c);
  const welcome = await nextEvent(c, 'welcome');
  assert.deepEqual(welcome.catch_up, { since: 0, until: 1200 });
  await worker.publish(name, writer, { live: true });
  await messagesArrive(c, seen, 1201, 30_000);
  assert.deepEqual(
    seen.messages.map((m) => m.seq),
    Array.from({ length: 1201 }, (_, i) => i + 1),
    'every message once, in order, the live one last',
  );
  assert.equal(seen.resyncs.length, 0);
});
