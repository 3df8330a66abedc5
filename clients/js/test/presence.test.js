// `client.presence` and `presenceMembers()` against the real worker under
// `wrangler dev` (docs/protocol.md, "Presence").
//
// The worker flushes presence every 200 ms and lets a dropped connection
// linger 3 s; the client that loses its socket is back after 1 s, several
// flushes later, so only the grace keeps it listed meanwhile. Tests wait for the events the contract promises, within a bound,
// and record every event on the way to check what must never happen (a
// member that stayed, reported gone).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { RoomcastClient } from '../src/index.js';
import { Worker, token, room, nextEvent } from '../../../tests/js/worker.mjs';

const WAIT_MS = 15_000;
const GRACE_MS = 3000;
const RECONNECT_MS = 1000;

let worker;
before(async () => {
  worker = await Worker.start({
    PRESENCE_INTERVAL_MS: '200',
    PRESENCE_GRACE_MS: String(GRACE_MS),
    RATE_PER_SEC: '1000',
    RATE_BURST: '1000',
    ROOM_RATE_PER_SEC: '100000',
  });
});
after(() => worker?.stop());

/**
 * A `ws` WebSocket that remembers its instances, so a test can drop one
 * without a close frame (`terminate()`), as a network that fails does.
 */
class DroppableSocket extends WebSocket {
  static opened = [];

  constructor(...args) {
    super(...args);
    DroppableSocket.opened.push(this);
  }
}

/**
 * A client of `name` as `sub`, closed when the test ends. With the presence
 * right unless `presence` is false; `info` is its token's `info` claim.
 */
function join(t, name, sub, { info, presence = true, backoff = { initialMs: 100, maxMs: 1000 } } = {}) {
  const client = new RoomcastClient({
    url: worker.url(),
    room: name,
    token: token({ sub, presence: presence ? ['*'] : undefined, info }),
    WebSocket: DroppableSocket,
    backoff,
  });
  t.after(() => client.close());
  return client;
}

const EVENTS = ['state', 'join', 'leave', 'update', 'occupancy', 'countsOnly'];

/** Every event `presence` emits, in order, as `[type, detail]`. */
function record(presence) {
  const events = [];
  for (const type of EVENTS) presence.addEventListener(type, (e) => events.push([type, e.detail]));
  return events;
}

/**
 * Resolves once `done()` holds, checked now and after every presence event,
 * or rejects after `ms` saying `what` it waited for.
 */
function until(presence, what, done, ms = WAIT_MS) {
  return new Promise((resolve, reject) => {
    const stop = () => {
      clearTimeout(timer);
      for (const type of EVENTS) presence.removeEventListener(type, check);
    };
    const check = () => {
      if (!done()) return;
      stop();
      resolve();
    };
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`not within ${ms} ms: ${what}; members ${subs(presence)}, counts ${counts(presence)}`));
    }, ms);
    for (const type of EVENTS) presence.addEventListener(type, check);
    check();
  });
}

/**
 * Resolves once `ms` passed without `happened()` holding after any presence
 * event; rejects, saying `what`, as soon as it does. For what must not
 * happen within a window, such as a leave before the grace is over.
 */
function neverWithin(presence, what, happened, ms) {
  return new Promise((resolve, reject) => {
    const stop = () => {
      clearTimeout(timer);
      for (const type of EVENTS) presence.removeEventListener(type, check);
    };
    const check = () => {
      if (!happened()) return;
      stop();
      reject(new Error(what));
    };
    const timer = setTimeout(() => {
      stop();
      resolve();
    }, Math.max(ms, 0));
    for (const type of EVENTS) presence.addEventListener(type, check);
    check();
  });
}

const counts = (presence) => {
  const o = presence.occupancy;
  return o && [o.connections, o.users, o.members];
};
const subs = (presence) => presence.members().map((m) => m.sub);
const connIds = (metas) => metas.map((m) => m.conn_id);
const connId = async (client) => (await nextEvent(client, 'welcome', WAIT_MS)).conn_id;
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

test('three users, one on two devices: state, joins, updates, leaves and occupancy', async (t) => {
  const name = room('js.presence');
  const watch = join(t, name, 'watch');
  const seen = record(watch.presence);
  const state = await nextEvent(watch.presence, 'state', WAIT_MS);
  assert.deepEqual(state.members.map((m) => m.sub), ['watch'], 'it sees itself');
  assert.equal(state.countsOnly, false);

  const annJoins = nextEvent(watch.presence, 'join', WAIT_MS, (d) => d.sub === 'ann');
  const annPhone = join(t, name, 'ann', { info: { name: 'Ann' } });
  const phone = await connId(annPhone);
  assert.deepEqual((await annJoins).metas, [{ conn_id: phone, info: { name: 'Ann' } }]);

  // A second device of someone already here is an update, not a join.
  const annUpdates = nextEvent(watch.presence, 'update', WAIT_MS, (d) => d.sub === 'ann');
  const annLaptop = join(t, name, 'ann');
  const laptop = await connId(annLaptop);
  const update = await annUpdates;
  assert.deepEqual(update.joined, [{ conn_id: laptop }]);
  assert.deepEqual(update.left, []);
  assert.deepEqual(connIds(update.metas).sort(), [phone, laptop].sort());

  const bob = join(t, name, 'bob');
  const bobConn = await connId(bob);
  join(t, name, 'cy', { presence: false });
  await until(watch.presence, 'three members, five connections', () => {
    return same(subs(watch.presence), ['ann', 'bob', 'watch']) && same(counts(watch.presence), [5, 4, 3]);
  });
  const ann = watch.presence.members().find((m) => m.sub === 'ann');
  assert.deepEqual(ann.metas.get(phone), { conn_id: phone, info: { name: 'Ann' } });
  assert.deepEqual(ann.metas.get(laptop), { conn_id: laptop });

  // A device closes: ann stays on the other; bob closes: he leaves.
  const annDown = nextEvent(watch.presence, 'update', WAIT_MS, (d) => d.sub === 'ann');
  annLaptop.close();
  assert.deepEqual((await annDown).left, [{ conn_id: laptop }]);
  await until(watch.presence, 'four connections', () => same(counts(watch.presence), [4, 4, 3]));
  const bobLeaves = nextEvent(watch.presence, 'leave', WAIT_MS, (d) => d.sub === 'bob');
  bob.close();
  assert.deepEqual((await bobLeaves).metas, [{ conn_id: bobConn }]);
  assert.deepEqual(subs(watch.presence), ['ann', 'watch'], 'the view is applied when the event fires');
  await until(watch.presence, 'bob gone from the counts', () => same(counts(watch.presence), [3, 3, 2]));

  assert.ok(!seen.some(([type, d]) => type === 'leave' && d.sub === 'ann'), 'ann never left');
  assert.equal(seen.filter(([type]) => type === 'state').length, 1, 'one state per connect');
  const occupancies = seen.filter(([type]) => type === 'occupancy').map(([, d]) => d);
  for (let i = 1; i < occupancies.length; i += 1) {
    assert.ok(!same(occupancies[i], occupancies[i - 1]), 'occupancy fires only when the counts change');
  }
});

test('a client that reconnects within the grace is an update to the others, never a leave', async (t) => {
  const name = room('js.grace');
  const watch = join(t, name, 'watch');
  const seen = record(watch.presence);
  const socketIndex = DroppableSocket.opened.length;
  // Back after a second, several intervals later: only the grace keeps him
  // listed meanwhile (a clean close would have him leave at the next flush).
  const bob = join(t, name, 'bob', { backoff: { initialMs: RECONNECT_MS, maxMs: RECONNECT_MS, random: () => 0.999 } });
  const old = await connId(bob);
  await until(watch.presence, 'bob and two connections', () => {
    return same(subs(watch.presence), ['bob', 'watch']) && same(counts(watch.presence), [2, 2, 2]);
  });
  const before = seen.length;

  // Dropped without a close frame, as a failing network drops it: the
  // client reconnects on its own, within the grace.
  const reconnected = connId(bob);
  const dropped = Date.now();
  DroppableSocket.opened[socketIndex].terminate();
  const fresh = await reconnected;
  assert.notEqual(fresh, old);
  assert.equal(bob.reconnects, 1);
  await until(watch.presence, "bob's new connection in place of the old", () => {
    const metas = watch.presence.members().find((m) => m.sub === 'bob')?.metas;
    return metas?.size === 1 && metas.has(fresh);
  });

  // Until the grace and an interval more are over, bob never leaves.
  await neverWithin(
    watch.presence,
    'bob left',
    () => !subs(watch.presence).includes('bob'),
    GRACE_MS + 1000 - (Date.now() - dropped),
  );
  const events = seen.slice(before);
  const about = (type) => events.filter(([kind, d]) => kind === type && d.sub === 'bob').map(([, d]) => d);
  assert.deepEqual(about('leave'), [], 'no leave');
  assert.deepEqual(about('join'), [], 'no join');
  const updates = about('update');
  assert.ok(updates.length >= 1, 'the others see an update');
  assert.deepEqual(updates.flatMap((u) => u.joined), [{ conn_id: fresh }]);
  assert.deepEqual(updates.flatMap((u) => u.left), [{ conn_id: old }]);
  for (const [type, d] of events) {
    if (type !== 'occupancy') continue;
    assert.ok(d.users === 2 && d.members === 2, `users and members never drop: ${JSON.stringify(d)}`);
  }
  assert.deepEqual(counts(watch.presence), [2, 2, 2]);
});

test('presenceMembers pages the members over HTTP, sorted by sub', async (t) => {
  const name = room('js.members');
  const ann = join(t, name, 'ann', { info: { name: 'Ann' } });
  const annConn = await connId(ann);
  join(t, name, 'ann');
  const bob = join(t, name, 'bob');
  const carol = join(t, name, 'carol');
  await until(carol.presence, 'three members, four connections', () => {
    return same(subs(carol.presence), ['ann', 'bob', 'carol']) && same(counts(carol.presence), [4, 3, 3]);
  });

  const first = await bob.presenceMembers({ limit: 2 });
  assert.equal(first.room, name);
  assert.equal(first.counts_only, false);
  assert.deepEqual(first.occupancy, { connections: 4, users: 3, members: 3 });
  assert.deepEqual(first.members.map((m) => m.sub), ['ann', 'bob']);
  assert.equal(first.members[0].metas.length, 2, 'ann on two devices');
  assert.deepEqual(first.members[0].metas.find((m) => m.conn_id === annConn), { conn_id: annConn, info: { name: 'Ann' } });
  assert.equal(first.next, 'bob');

  const second = await bob.presenceMembers({ after: first.next, limit: 2 });
  assert.deepEqual(second.members.map((m) => m.sub), ['carol']);
  assert.equal(second.next, null, 'the last page');

  const whole = await bob.presenceMembers();
  assert.deepEqual(whole.members.map((m) => m.sub), ['ann', 'bob', 'carol']);
  assert.equal(whole.next, null);
});

test('a client without the presence right gets the counts and no members', async (t) => {
  const name = room('js.counted');
  const cy = join(t, name, 'cy', { presence: false });
  const seen = record(cy.presence);
  const watch = join(t, name, 'watch');
  join(t, name, 'ann', { info: { name: 'Ann' } });
  await until(watch.presence, 'ann and the watcher', () => same(subs(watch.presence), ['ann', 'watch']));
  await until(cy.presence, 'three connections, two of them members', () => {
    return same(counts(cy.presence), [3, 3, 2]);
  });
  assert.deepEqual(cy.presence.members(), []);
  const kinds = new Set(seen.map(([type]) => type));
  assert.deepEqual([...kinds], ['occupancy'], 'occupancy only: no state, no joins');

  const page = await cy.presenceMembers();
  assert.deepEqual(page.members, []);
  assert.equal(page.next, null);
  assert.deepEqual(page.occupancy, { connections: 3, users: 3, members: 2 });
  assert.deepEqual(subs(watch.presence), ['ann', 'watch'], 'cy is counted, never listed');
});
