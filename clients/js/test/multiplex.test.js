// The multiplexed connection against the real worker under `wrangler dev`.
//
// The worker runs with IDLE_TIMEOUT_MS=2000 and HEARTBEAT_MS=1000: a
// connection told to ping every 600 s is closed by the server (4008) about
// every two seconds, which is how the resume test drops it in the middle of
// a stream. Connections that must stay up ping every 500 ms.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { RoomcastConnection } from '../src/index.js';
import { Worker, token, room, nextEvent } from '../../../tests/js/worker.mjs';

let worker;
before(async () => {
  worker = await Worker.start({
    IDLE_TIMEOUT_MS: '2000',
    HEARTBEAT_MS: '1000',
    RATE_PER_SEC: '1000',
    RATE_BURST: '1000',
    ROOM_RATE_PER_SEC: '100000',
  });
});
after(() => worker?.stop());

function connect(options = {}) {
  return new RoomcastConnection({
    url: worker.url(),
    token: token(),
    WebSocket,
    backoff: { initialMs: 100, maxMs: 1000 },
    ...options,
  });
}

/** A subscription's messages and its end, as handlers record them. */
function follow(connection, name, position) {
  const seen = { messages: [], unsubscribed: [], errors: [] };
  const subscription = connection.subscribe(
    name,
    {
      message: (m) => seen.messages.push(m),
      unsubscribed: (d) => seen.unsubscribed.push(d),
      error: (e) => seen.errors.push(e),
    },
    position,
  );
  return { subscription, seen };
}

/** Resolves once `seen.messages` holds `n` messages, or rejects after `ms`. */
function messagesArrive(subscription, seen, n, ms = 10_000) {
  if (seen.messages.length >= n) return Promise.resolve();
  return nextEvent(subscription, 'message', ms, () => seen.messages.length >= n);
}

const seqs = (seen) => seen.messages.map((m) => m.seq);
const range = (n) => Array.from({ length: n }, (_, i) => i + 1);

test('two rooms on one connection: each gets its own messages in order, and acks name their room', async (t) => {
  const connection = connect({ heartbeatMs: 500 });
  t.after(() => connection.close());
  const a = follow(connection, room('mux.a'));
  const b = follow(connection, room('mux.b'));
  await Promise.all([nextEvent(a.subscription, 'subscribed'), nextEvent(b.subscription, 'subscribed')]);

  const acks = await Promise.all([
    ...range(20).map((i) => a.subscription.publish({ i })),
    ...range(10).map((i) => b.subscription.publish({ i })),
  ]);
  await messagesArrive(a.subscription, a.seen, 20);
  await messagesArrive(b.subscription, b.seen, 10);
  assert.deepEqual(seqs(a.seen), range(20));
  assert.deepEqual(seqs(b.seen), range(10));
  assert.deepEqual(
    a.seen.messages.map((m) => m.data.i),
    range(20),
  );
  assert.ok(acks.slice(0, 20).every((ack) => ack.room === a.subscription.room));
  assert.ok(acks.slice(20).every((ack) => ack.room === b.subscription.room));
});

test('after the server drops the connection, every room resumes without a gap or a duplicate', async (t) => {
  // Pings every 600 s: the server closes it as idle about every two seconds.
  const connection = connect({ heartbeatMs: 600_000 });
  t.after(() => connection.close());
  const names = [room('mux.resume'), room('mux.resume'), room('mux.resume')];
  const rooms = names.map((name) => follow(connection, name));
  await Promise.all(rooms.map(({ subscription }) => nextEvent(subscription, 'subscribed')));

  const publisher = token();
  const total = 60;
  for (let i = 1; i <= total; i += 1) {
    await Promise.all(names.map((name) => worker.publish(name, publisher, { i })));
    if (i % 20 === 0) await nextEvent(connection, 'state', 10_000, (d) => d.state === 'open');
  }
  for (const { subscription, seen } of rooms) await messagesArrive(subscription, seen, total, 20_000);
  assert.ok(connection.reconnects >= 1, 'the connection was dropped and came back');
  for (const { seen } of rooms) {
    assert.deepEqual(seqs(seen), range(total));
    assert.deepEqual(
      seen.messages.map((m) => m.data.i),
      range(total),
    );
  }
});

test('a refreshed token that no longer allows a room ends that subscription only', async (t) => {
  const kept = room('mux.kept');
  const dropped = room('mux.dropped');
  const connection = connect({
    token: token({ rooms: [kept, dropped], ttlSecs: 4 }),
    refreshToken: () => token({ rooms: [kept] }),
    heartbeatMs: 500,
  });
  t.after(() => connection.close());
  const a = follow(connection, kept);
  const b = follow(connection, dropped);
  await Promise.all([nextEvent(a.subscription, 'subscribed'), nextEvent(b.subscription, 'subscribed')]);

  // A 4 s token is refreshed half-way.
  await nextEvent(b.subscription, 'unsubscribed', 10_000);
  assert.deepEqual(b.seen.unsubscribed, [{ room: dropped, reason: 'forbidden' }]);
  assert.equal(a.subscription.status, 'subscribed');
  await a.subscription.publish('still here');
  await messagesArrive(a.subscription, a.seen, 1);
  assert.deepEqual(connection.rooms, [kept]);
});

test('unsubscribe stops a room; subscribing it again resumes from the saved position', async (t) => {
  const connection = connect({ heartbeatMs: 500 });
  t.after(() => connection.close());
  const name = room('mux.again');
  const first = follow(connection, name);
  await nextEvent(first.subscription, 'subscribed');
  for (let i = 1; i <= 5; i += 1) await first.subscription.publish({ i });
  await messagesArrive(first.subscription, first.seen, 5);
  const position = { since: first.subscription.lastSeq, epoch: first.subscription.epoch };
  first.subscription.unsubscribe();

  const publisher = token();
  for (let i = 6; i <= 8; i += 1) await worker.publish(name, publisher, { i });
  const second = follow(connection, name, position);
  await messagesArrive(second.subscription, second.seen, 3);
  assert.deepEqual(seqs(second.seen), [6, 7, 8]);
  assert.equal(second.subscription.recovered, true);
  assert.deepEqual(seqs(first.seen), range(5), 'nothing reached the ended subscription');
});

test('a subscribe past the token rights is refused for that room only', async (t) => {
  const allowed = room('mux.allowed');
  const connection = connect({ token: token({ rooms: [allowed] }), heartbeatMs: 500 });
  t.after(() => connection.close());
  const ok = follow(connection, allowed);
  const refused = follow(connection, room('mux.refused'));
  await Promise.all([nextEvent(refused.subscription, 'unsubscribed'), nextEvent(ok.subscription, 'subscribed')]);
  assert.equal(refused.seen.unsubscribed[0].reason, 'refused');
  assert.equal(refused.seen.unsubscribed[0].code, 'forbidden');
  assert.equal(ok.subscription.status, 'subscribed');
});
