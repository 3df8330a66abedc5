// The multiplexed connection against a scripted socket and node's mock
// timers: how each subscription's frames are ordered and deduplicated, how
// the connection resubscribes every room in one frame after a reconnect,
// publishes and their acks, unsubscribes, refusals and token refresh. No
// worker: the socket is driven frame by frame.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RoomcastConnection } from '../src/index.js';

const HEARTBEAT_MS = 30_000;

/** A WebSocket the test drives: it records what the client sends and delivers the frames it is given. */
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

  /** The frames sent so far, parsed (pings left out), and forgotten. */
  take() {
    return this.sent.splice(0).filter((text) => text !== 'ping').map((text) => JSON.parse(text));
  }

  frame(value) {
    this.onmessage?.({ data: typeof value === 'string' ? value : JSON.stringify(value) });
  }

  connected(maxRooms = 128, channels = []) {
    this.readyState = 1;
    this.frame({ type: 'connected', conn_id: 'c_1', heartbeat_ms: HEARTBEAT_MS, max_message_bytes: 65536, max_rooms: maxRooms, channels });
  }

  serverClose(code = 1011) {
    this.readyState = 3;
    this.onclose?.({ code, reason: 'scripted' });
  }
}

const subscribed = (room, { epoch = 'e_1', head = 0, recovered = true, ...rest } = {}) => ({
  type: 'subscribed',
  room,
  conn_id: 'c_1',
  epoch,
  head,
  recovered,
  heartbeat_ms: HEARTBEAT_MS,
  ...rest,
});
const message = (room, seq) => ({ type: 'message', room, id: `${room}-${seq}`, seq, ts: 0, sender: 's', origin: 'ws', data: { seq } });

/** A connection on scripted sockets; `reconnect()` drops the socket and waits out the backoff. */
function scripted(t, options = {}) {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'Date'] });
  ScriptedSocket.opened = [];
  const connection = new RoomcastConnection({
    url: 'http://rooms.test',
    token: 'not.a.jwt',
    WebSocket: ScriptedSocket,
    backoff: { initialMs: 100, maxMs: 100, random: () => 0.5 },
    ...options,
  });
  t.after(() => connection.close());
  const socket = () => ScriptedSocket.opened.at(-1);
  const reconnect = () => {
    const before = ScriptedSocket.opened.length;
    socket().serverClose();
    t.mock.timers.tick(100);
    assert.equal(ScriptedSocket.opened.length, before + 1, 'the connection reconnected');
    return socket();
  };
  return { connection, socket, reconnect };
}

/** A subscription's handlers, recording every call as `[event, detail]`. */
function recorder() {
  const calls = [];
  const handler = (name) => (detail) => calls.push([name, detail]);
  const handlers = {};
  for (const name of ['subscribed', 'message', 'ack', 'resync', 'error', 'unsubscribed']) handlers[name] = handler(name);
  return { handlers, calls, seqs: () => calls.filter(([name]) => name === 'message').map(([, m]) => m.seq) };
}

test('connects to /v1/ws with the token as a subprotocol and subscribes earlier rooms in one frame', (t) => {
  const { connection, socket } = scripted(t);
  assert.equal(new URL(socket().url).pathname, '/v1/ws');
  assert.equal(new URL(socket().url).protocol, 'ws:');
  assert.deepEqual(socket().protocols, ['roomcast.v1', 'bearer.not.a.jwt']);
  connection.subscribe('a');
  connection.subscribe('b', {}, { since: 7, epoch: 'e_b' });
  assert.deepEqual(socket().take(), [], 'nothing is sent before connected');
  socket().connected();
  assert.equal(connection.state, 'open');
  assert.equal(connection.connId, 'c_1');
  assert.deepEqual(socket().take(), [
    {
      type: 'subscribe',
      rooms: [{ room: 'a' }, { room: 'b', since: 7, epoch: 'e_b' }],
    },
  ]);
  connection.subscribe('c');
  assert.deepEqual(socket().take(), [{ type: 'subscribe', room: 'c' }], 'once open, a room is subscribed at once');
  assert.deepEqual(connection.rooms, ['a', 'b', 'c']);
  assert.throws(() => connection.subscribe('a'), /already subscribed/);
});

test('each room delivers its messages in seq order, once, tracking since and epoch', (t) => {
  const { connection, socket } = scripted(t);
  const a = recorder();
  const b = recorder();
  const subA = connection.subscribe('a', a.handlers);
  connection.subscribe('b', b.handlers);
  socket().connected();
  socket().frame(message('a', 1));
  assert.deepEqual(a.seqs(), [], 'a message before subscribed is not taken');
  socket().frame(subscribed('a', { epoch: 'e_a', head: 3 }));
  socket().frame(subscribed('b', { epoch: 'e_b', head: 0 }));
  for (const seq of [4, 5, 5, 3, 6]) socket().frame(message('a', seq));
  for (const seq of [1, 2, 1]) socket().frame(message('b', seq));
  assert.deepEqual(a.seqs(), [4, 5, 6]);
  assert.deepEqual(b.seqs(), [1, 2]);
  assert.equal(subA.lastSeq, 6);
  assert.equal(subA.epoch, 'e_a');
  assert.equal(subA.status, 'subscribed');
  assert.equal(a.calls[0][0], 'subscribed');
  assert.equal(a.calls[0][1].head, 3);
});

test('after a reconnect every room is resubscribed in one frame from its position, and the replay is deduplicated', (t) => {
  const { connection, socket, reconnect } = scripted(t);
  const a = recorder();
  const b = recorder();
  connection.subscribe('a', a.handlers);
  connection.subscribe('b', b.handlers);
  connection.subscribe('c');
  socket().connected();
  socket().frame(subscribed('a', { epoch: 'e_a', head: 2 }));
  socket().frame(subscribed('b', { epoch: 'e_b', head: 0 }));
  socket().frame(message('a', 3));
  socket().frame(message('b', 1));
  socket().take();

  const next = reconnect();
  assert.equal(connection.state, 'reconnecting');
  socket().frame(message('a', 4));
  assert.deepEqual(next.take(), [], 'nothing is sent before connected');
  next.connected();
  assert.deepEqual(next.take(), [
    {
      type: 'subscribe',
      rooms: [
        { room: 'a', since: 3, epoch: 'e_a' },
        { room: 'b', since: 1, epoch: 'e_b' },
        { room: 'c' },
      ],
    },
  ]);
  next.frame(message('a', 4));
  assert.deepEqual(a.seqs(), [3], 'a message before the resubscribe is answered is not taken');
  next.frame(subscribed('a', { epoch: 'e_a', head: 5 }));
  for (const seq of [3, 4, 5, 4, 6]) next.frame(message('a', seq));
  next.frame(subscribed('b', { epoch: 'e_b', head: 1 }));
  next.frame(message('b', 2));
  assert.deepEqual(a.seqs(), [3, 4, 5, 6]);
  assert.deepEqual(b.seqs(), [1, 2]);
  assert.equal(connection.reconnects, 1);

  reconnect().connected();
  assert.deepEqual(socket().take()[0].rooms.slice(0, 2), [
    { room: 'a', since: 6, epoch: 'e_a' },
    { room: 'b', since: 2, epoch: 'e_b' },
  ]);
});

test('a resubscribe lists at most max_rooms rooms per frame', (t) => {
  const { connection, socket } = scripted(t);
  for (const room of ['a', 'b', 'c']) connection.subscribe(room);
  socket().connected(2);
  assert.deepEqual(socket().take(), [
    { type: 'subscribe', rooms: [{ room: 'a' }, { room: 'b' }] },
    { type: 'subscribe', rooms: [{ room: 'c' }] },
  ]);
});

test('a room that could not resume reports a resync and continues after its head', (t) => {
  const { connection, socket, reconnect } = scripted(t);
  const a = recorder();
  connection.subscribe('a', a.handlers, { since: 10, epoch: 'e_old' });
  socket().connected();
  assert.deepEqual(socket().take(), [{ type: 'subscribe', rooms: [{ room: 'a', since: 10, epoch: 'e_old' }] }]);
  socket().frame(subscribed('a', { epoch: 'e_new', head: 4, recovered: false }));
  socket().frame(message('a', 5));
  assert.deepEqual(
    a.calls.filter(([name]) => name === 'resync'),
    [['resync', { room: 'a', previousEpoch: 'e_old', since: 10, epoch: 'e_new', head: 4 }]],
  );
  assert.deepEqual(a.seqs(), [5]);
  reconnect().connected();
  assert.deepEqual(socket().take(), [{ type: 'subscribe', rooms: [{ room: 'a', since: 5, epoch: 'e_new' }] }]);
});

test('a catch-up is paged over HTTP for its room while live messages of that room wait', async (t) => {
  const { connection, socket } = scripted(t);
  const a = recorder();
  const b = recorder();
  connection.subscribe('a', a.handlers, { since: 0, epoch: 'e_1' });
  connection.subscribe('b', b.handlers);
  const requests = [];
  let answer;
  t.mock.method(globalThis, 'fetch', (url, init) => {
    requests.push([String(url), init.headers.authorization]);
    return new Promise((resolve) => (answer = resolve));
  });
  socket().connected();
  socket().frame(subscribed('a', { head: 2, catch_up: { since: 0, until: 2 } }));
  socket().frame(subscribed('b', { head: 0 }));
  socket().frame(message('a', 3));
  socket().frame(message('b', 1));
  assert.deepEqual(requests, [['http://rooms.test/v1/rooms/a/messages?since=0&limit=1000', 'Bearer not.a.jwt']]);
  assert.deepEqual(a.seqs(), [], 'the live message waits for the pages');
  assert.deepEqual(b.seqs(), [1], 'other rooms do not wait');
  const messages = [message('a', 1), message('a', 2)];
  answer({ ok: true, status: 200, json: async () => ({ room: 'a', epoch: 'e_1', head: 2, messages, truncated: false }) });
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(a.seqs(), [1, 2, 3]);
});

test('a gap in one room reconnects the connection, which resumes every room', (t) => {
  const { connection, socket } = scripted(t);
  const a = recorder();
  connection.subscribe('a', a.handlers);
  socket().connected();
  socket().frame(subscribed('a', { head: 1 }));
  socket().frame(message('a', 2));
  const first = socket();
  first.frame(message('a', 4));
  assert.equal(connection.state, 'reconnecting');
  assert.equal(first.readyState, 3, 'the socket with the gap was closed');
  t.mock.timers.tick(100);
  socket().connected();
  assert.deepEqual(socket().take(), [{ type: 'subscribe', rooms: [{ room: 'a', since: 2, epoch: 'e_1' }] }]);
  assert.deepEqual(a.seqs(), [2]);
});

test('publishes go out once the room is subscribed, resolve with their ack and are re-sent after a reconnect', async (t) => {
  const { connection, socket, reconnect } = scripted(t);
  const a = connection.subscribe('a');
  const b = connection.subscribe('b');
  const first = a.publish({ text: 'one' }, { id: 'k1' });
  socket().connected();
  const [subscribe, ...rest] = socket().take();
  assert.equal(subscribe.type, 'subscribe');
  assert.deepEqual(rest, [], 'a publish waits for its room to be subscribed');
  socket().frame(subscribed('a'));
  const [sent] = socket().take();
  assert.deepEqual(sent, { type: 'publish', room: 'a', ref: sent.ref, id: 'k1', data: { text: 'one' } });
  socket().frame({ type: 'ack', room: 'a', ref: sent.ref, id: 'k1', seq: 1, duplicate: false });
  assert.deepEqual(await first, { type: 'ack', room: 'a', ref: sent.ref, id: 'k1', seq: 1, duplicate: false });

  const early = b.publish('early', { id: 'k0' });
  assert.deepEqual(socket().take(), [], 'open, but the room is not subscribed yet');
  socket().frame(subscribed('b'));
  const [sentEarly] = socket().take();
  assert.equal(sentEarly.id, 'k0');
  socket().frame({ type: 'ack', room: 'b', ref: sentEarly.ref, id: 'k0', seq: 1, duplicate: false });
  assert.equal((await early).seq, 1);
  const refused = b.publish('x');
  const second = b.publish('y', { id: 'k2' });
  const [x, y] = socket().take();
  assert.notEqual(x.ref, sent.ref, 'refs are unique on the connection');
  socket().frame({ type: 'error', room: 'b', ref: x.ref, code: 'forbidden', message: 'no publish right' });
  await assert.rejects(refused, { code: 'forbidden' });
  assert.equal(b.status, 'subscribed', 'a refused publish does not end the subscription');

  const next = reconnect();
  next.connected();
  next.take();
  next.frame(subscribed('b', { head: 0 }));
  assert.deepEqual(next.take(), [y], 'the unacknowledged publish is sent again, same ref and id');
  next.frame({ type: 'ack', room: 'b', ref: y.ref, id: 'k2', seq: 2, duplicate: true });
  assert.equal((await second).duplicate, true);
  assert.equal(b.pending, 0);
});

test('unsubscribe sends its frame, ends the subscription at once, and a new subscription of the room ignores the old frames', async (t) => {
  const { connection, socket, reconnect } = scripted(t);
  const a = recorder();
  const old = connection.subscribe('a', a.handlers);
  socket().connected();
  socket().frame(subscribed('a', { head: 0 }));
  socket().frame(message('a', 1));
  socket().take();
  const pending = old.publish('late');
  socket().take();

  old.unsubscribe();
  assert.deepEqual(socket().take(), [{ type: 'unsubscribe', room: 'a' }]);
  assert.equal(old.status, 'ended');
  assert.deepEqual(a.calls.at(-1), ['unsubscribed', { room: 'a', reason: 'client' }]);
  assert.deepEqual(connection.rooms, []);
  await assert.rejects(pending, /unsubscribed: client/);

  const b = recorder();
  const again = connection.subscribe('a', b.handlers);
  socket().frame(message('a', 2));
  socket().frame({ type: 'unsubscribed', room: 'a', reason: 'client' });
  assert.equal(again.status, 'subscribing', 'the answer to the old unsubscribe does not end the new subscription');
  socket().frame(subscribed('a', { head: 2 }));
  socket().frame(message('a', 3));
  assert.deepEqual(a.seqs(), [1]);
  assert.deepEqual(b.seqs(), [3]);
  reconnect().connected();
  assert.deepEqual(socket().take(), [{ type: 'subscribe', rooms: [{ room: 'a', since: 3, epoch: 'e_1' }] }]);
});

test('an unsubscribed frame from the server ends that subscription only; it is not resubscribed', async (t) => {
  const { connection, socket, reconnect } = scripted(t);
  const a = recorder();
  const b = recorder();
  const subA = connection.subscribe('a', a.handlers);
  connection.subscribe('b', b.handlers);
  socket().connected();
  socket().frame(subscribed('a'));
  socket().frame(subscribed('b'));
  const pending = subA.publish('x');
  socket().frame({ type: 'unsubscribed', room: 'a', reason: 'forbidden' });
  await assert.rejects(pending, /unsubscribed: forbidden/);
  assert.deepEqual(a.calls.at(-1), ['unsubscribed', { room: 'a', reason: 'forbidden' }]);
  assert.equal(subA.status, 'ended');
  socket().frame(message('a', 1));
  assert.deepEqual(a.seqs(), []);
  socket().frame({ type: 'unsubscribed', room: 'b', reason: 'closed' });
  assert.deepEqual(b.calls.at(-1), ['unsubscribed', { room: 'b', reason: 'closed' }]);
  connection.subscribe('c');
  reconnect().connected();
  assert.deepEqual(socket().take(), [{ type: 'subscribe', rooms: [{ room: 'c' }] }]);
});

test('a refused subscribe ends the subscription with the error', (t) => {
  const { connection, socket } = scripted(t);
  const a = recorder();
  const c = recorder();
  const subA = connection.subscribe('a', a.handlers);
  connection.subscribe('c', c.handlers);
  socket().connected();
  const error = { type: 'error', room: 'a', code: 'too_many_rooms', message: 'at most 128 rooms' };
  socket().frame(error);
  assert.deepEqual(a.calls, [
    ['error', error],
    ['unsubscribed', { room: 'a', reason: 'refused', code: 'too_many_rooms' }],
  ]);
  assert.equal(subA.status, 'ended');
  socket().frame(subscribed('c', { head: 0 }));
  socket().frame(message('c', 1));
  assert.deepEqual(
    c.calls.map(([name]) => name),
    ['subscribed', 'message'],
  );
});

test('a channel room resumes from its position: the server\'s own subscribed after a reconnect is passed over', (t) => {
  const { connection, socket, reconnect } = scripted(t);
  const seen = recorder();
  connection.addEventListener('subscription', (e) => e.detail.on(seen.handlers));
  socket().connected(128, ['news']);
  socket().frame(subscribed('news', { head: 5 }));
  socket().frame(message('news', 6));
  reconnect().connected(128, ['news']);
  assert.deepEqual(socket().take(), [{ type: 'subscribe', rooms: [{ room: 'news', since: 6, epoch: 'e_1' }] }]);
  // The server's subscription from the head, and a live message, before it read ours.
  socket().frame(subscribed('news', { head: 9, recovered: false }));
  socket().frame(message('news', 9));
  socket().frame(subscribed('news', { head: 9, recovered: true }));
  for (const seq of [7, 8, 9]) socket().frame(message('news', seq));
  assert.deepEqual(seen.seqs(), [6, 7, 8, 9], 'every message once, in order');
  assert.ok(!seen.calls.some(([name]) => name === 'resync'), 'no resync');
});

test('a room the server subscribed itself is announced before its first frame', (t) => {
  const { connection, socket } = scripted(t);
  const seen = recorder();
  connection.addEventListener('subscription', (e) => e.detail.on(seen.handlers));
  socket().connected();
  socket().frame(subscribed('news', { head: 5 }));
  socket().frame(message('news', 6));
  assert.deepEqual(connection.rooms, ['news']);
  assert.deepEqual(
    seen.calls.map(([name]) => name),
    ['subscribed', 'message'],
  );
  socket().frame({ type: 'error', room: 'elsewhere', code: 'not_subscribed', message: 'x' });
  socket().frame({ type: 'message', room: 'elsewhere', seq: 1 });
  assert.deepEqual(connection.rooms, ['news'], 'other frames of unknown rooms open nothing');
});

test('presence frames reach the presence view of their room', (t) => {
  const { connection, socket } = scripted(t);
  const joins = [];
  const a = connection.subscribe('a', { presence: { join: (d) => joins.push(['a', d.sub]) } });
  const b = connection.subscribe('b', { presence: { join: (d) => joins.push(['b', d.sub]) } });
  socket().connected();
  socket().frame(subscribed('a'));
  socket().frame(subscribed('b'));
  const state = (room, sub) => ({ type: 'presence_state', room, members: [{ sub, metas: [{ conn_id: `${sub}1` }] }], counts_only: false, more: false });
  socket().frame(state('a', 'alice'));
  socket().frame(state('b', 'bob'));
  socket().frame({ type: 'occupancy', room: 'b', connections: 3, users: 2, members: 1 });
  assert.deepEqual(joins, [
    ['a', 'alice'],
    ['b', 'bob'],
  ]);
  assert.deepEqual(
    a.presence.members().map((m) => m.sub),
    ['alice'],
  );
  assert.deepEqual(b.presence.occupancy, { connections: 3, users: 2, members: 1 });
  assert.equal(a.presence.occupancy, null);
  assert.throws(() => connection.subscribe('c', { mesage: () => {} }), /unknown handler mesage/);
  assert.throws(() => connection.subscribe('d', { presence: { joined: () => {} } }), /unknown handler joined/);
  connection.subscribe('e', { message: undefined, presence: { join: undefined } });
  assert.deepEqual(connection.rooms, ['a', 'b', 'e'], 'a subscribe that threw keeps nothing');
});

test('one auth frame refreshes the token of every room', async (t) => {
  let fresh = 0;
  const { connection, socket } = scripted(t, { refreshToken: async () => `fresh.${++fresh}` });
  const tokens = [];
  connection.addEventListener('token', (e) => tokens.push(e.detail.exp));
  connection.subscribe('a');
  connection.subscribe('b');
  socket().connected();
  socket().take();
  socket().frame({ type: 'token_expiring', exp: 100 });
  socket().frame({ type: 'token_expiring', exp: 100 });
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(socket().take(), [{ type: 'auth', token: 'fresh.1' }], 'one refresh, one frame, no room');
  socket().frame({ type: 'auth_ok', exp: 200 });
  assert.deepEqual(tokens, [200]);
});

test('pings every heartbeat and reconnects when no answer comes', (t) => {
  const { connection, socket } = scripted(t);
  socket().connected();
  t.mock.timers.tick(HEARTBEAT_MS);
  assert.deepEqual(socket().sent, ['ping']);
  socket().frame('pong');
  t.mock.timers.tick(2 * HEARTBEAT_MS + 1000);
  assert.equal(connection.state, 'open', 'a pong keeps it alive');
  t.mock.timers.tick(HEARTBEAT_MS);
  assert.equal(connection.state, 'reconnecting', 'two silent intervals and more: the path is dead');
});

test('close ends every subscription and rejects its publishes', async (t) => {
  const { connection, socket } = scripted(t);
  const a = recorder();
  const subA = connection.subscribe('a', a.handlers);
  socket().connected();
  const pending = subA.publish('x');
  connection.close();
  await assert.rejects(pending, /unsubscribed: connection_closed/);
  assert.deepEqual(a.calls.at(-1), ['unsubscribed', { room: 'a', reason: 'connection_closed' }]);
  assert.equal(connection.state, 'closed');
  assert.throws(() => connection.subscribe('b'), /connection is closed/);
});
