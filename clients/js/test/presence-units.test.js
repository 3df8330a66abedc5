// The presence view fed frames as the room sends them: state pages, diffs,
// counts-only spells and occupancy, checked by the view and by the events
// it emits. No socket: the last test drives a client over a scripted one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Presence, RoomcastClient } from '../src/index.js';

const EVENTS = ['state', 'join', 'leave', 'update', 'occupancy', 'countsOnly'];

/** A presence view and every event it emitted, in order, as `[type, detail]`. */
function recorded(presence = new Presence()) {
  const events = [];
  for (const type of EVENTS) presence.addEventListener(type, (e) => events.push([type, e.detail]));
  return { presence, events, take: () => events.splice(0) };
}

const meta = (conn_id, info) => (info === undefined ? { conn_id } : { conn_id, info });
const member = (sub, ...metas) => ({ sub, metas });
const state = (members, { more = false, counts_only = false } = {}) => ({
  type: 'presence_state',
  room: 'r',
  members,
  counts_only,
  more,
});
const diff = ({ joins = [], leaves = [] }) => ({ type: 'presence', room: 'r', joins, leaves });
const occupancy = (connections, users, members) => ({ type: 'occupancy', room: 'r', connections, users, members });

/** The view as plain data: `[[sub, [conn_id, ...]], ...]`. */
function view(presence) {
  return presence.members().map((m) => [m.sub, [...m.metas.keys()].sort()]);
}

/** Alice on a laptop and a phone, Bob and Carol on one device each. */
const THREE = [
  member('alice', meta('a1', { device: 'laptop' }), meta('a2', { device: 'phone' })),
  member('bob', meta('b1')),
  member('carol', meta('c1')),
];

test('a state lists the members sorted by sub, each with its metas', () => {
  const { presence, take } = recorded();
  presence.receive(state([THREE[2], THREE[0], THREE[1]]));
  assert.deepEqual(view(presence), [
    ['alice', ['a1', 'a2']],
    ['bob', ['b1']],
    ['carol', ['c1']],
  ]);
  assert.deepEqual(presence.members()[0].metas.get('a2'), meta('a2', { device: 'phone' }));
  const events = take();
  assert.deepEqual(
    events.map(([type, d]) => [type, d.sub]),
    [
      ['join', 'alice'],
      ['join', 'bob'],
      ['join', 'carol'],
      ['state', undefined],
    ],
  );
  assert.deepEqual(events[0][1].metas, THREE[0].metas);
  const [, last] = events.at(-1);
  assert.equal(last.countsOnly, false);
  assert.deepEqual(
    last.members.map((m) => m.sub),
    ['alice', 'bob', 'carol'],
  );
});

test('diffs: a second device is an update, a last device leaving is a leave, a newcomer a join', () => {
  const { presence, take } = recorded();
  presence.receive(state(THREE));
  take();

  presence.receive(diff({ leaves: [member('alice', meta('a2'))] }));
  assert.deepEqual(take(), [
    ['update', { sub: 'alice', joined: [], left: [meta('a2', { device: 'phone' })], metas: [THREE[0].metas[0]] }],
  ]);

  presence.receive(diff({ leaves: [member('bob', meta('b1'))], joins: [member('dave', meta('d1', 'hi'))] }));
  assert.deepEqual(take(), [
    ['leave', { sub: 'bob', metas: [meta('b1')] }],
    ['join', { sub: 'dave', metas: [meta('d1', 'hi')] }],
  ]);

  presence.receive(diff({ joins: [member('carol', meta('c2'))] }));
  assert.deepEqual(take(), [
    ['update', { sub: 'carol', joined: [meta('c2')], left: [], metas: [meta('c1'), meta('c2')] }],
  ]);
  assert.deepEqual(view(presence), [
    ['alice', ['a1']],
    ['carol', ['c1', 'c2']],
    ['dave', ['d1']],
  ]);
});

test('a reconnect that replaces a lingering meta in one diff is an update: the member never leaves', () => {
  const { presence, take } = recorded();
  presence.receive(state([member('bob', meta('b1'))]));
  take();
  presence.receive(diff({ leaves: [member('bob', meta('b1'))], joins: [member('bob', meta('b2'))] }));
  assert.deepEqual(take(), [['update', { sub: 'bob', joined: [meta('b2')], left: [meta('b1')], metas: [meta('b2')] }]]);
  assert.deepEqual(view(presence), [['bob', ['b2']]]);
});

test('diffs are idempotent: a known join and an unknown leave change nothing and emit nothing', () => {
  const { presence, take } = recorded();
  presence.receive(state(THREE));
  take();
  const frame = diff({ leaves: [member('bob', meta('b1'))], joins: [member('erin', meta('e1'))] });
  presence.receive(frame);
  assert.equal(take().length, 2);
  const before = view(presence);
  presence.receive(frame);
  presence.receive(diff({ joins: [member('alice', meta('a1', { device: 'laptop' }))] }));
  presence.receive(diff({ leaves: [member('zoe', meta('z1')), member('alice', meta('a9'))] }));
  assert.deepEqual(take(), []);
  assert.deepEqual(view(presence), before);
  // A known meta joining again with other info replaces it.
  presence.receive(diff({ joins: [member('alice', meta('a1', { device: 'desktop' }))] }));
  assert.deepEqual(take(), [
    [
      'update',
      {
        sub: 'alice',
        joined: [meta('a1', { device: 'desktop' })],
        left: [],
        metas: [meta('a1', { device: 'desktop' }), THREE[0].metas[1]],
      },
    ],
  ]);
});

test('state pages accumulate and replace the view only with the last page', () => {
  const { presence, take } = recorded();
  presence.receive(state([member('old', meta('o1'))]));
  take();
  presence.receive(state([THREE[0]], { more: true }));
  presence.receive(state([THREE[1]], { more: true }));
  assert.deepEqual(view(presence), [['old', ['o1']]], 'the view waits for the last page');
  assert.deepEqual(take(), []);
  presence.receive(state([THREE[2]]));
  assert.deepEqual(view(presence), [
    ['alice', ['a1', 'a2']],
    ['bob', ['b1']],
    ['carol', ['c1']],
  ]);
  assert.deepEqual(
    take().map(([type, d]) => [type, d.sub]),
    [
      ['join', 'alice'],
      ['join', 'bob'],
      ['join', 'carol'],
      ['leave', 'old'],
      ['state', undefined],
    ],
  );
});

test('a reconnect rebuilds the view and emits only the differences', () => {
  const { presence, take } = recorded();
  presence.receive(state(THREE));
  take();
  // Pages of a connection that dropped before its last page are forgotten.
  presence.receive(state([member('ghost', meta('g1'))], { more: true }));
  presence.connected();
  presence.receive(
    state([
      member('alice', meta('a1', { device: 'laptop' }), meta('a3')),
      member('bob', meta('b1')),
      member('dave', meta('d1')),
    ]),
  );
  assert.deepEqual(take(), [
    [
      'update',
      { sub: 'alice', joined: [meta('a3')], left: [THREE[0].metas[1]], metas: [THREE[0].metas[0], meta('a3')] },
    ],
    ['leave', { sub: 'carol', metas: [meta('c1')] }],
    ['join', { sub: 'dave', metas: [meta('d1')] }],
    ['state', { members: presence.members(), countsOnly: false }],
  ]);
  assert.deepEqual(view(presence), [
    ['alice', ['a1', 'a3']],
    ['bob', ['b1']],
    ['dave', ['d1']],
  ]);
});

test('counts-only: the list is hidden and frozen, and a resync reports only what changed meanwhile', () => {
  const { presence, take } = recorded();
  presence.receive(state(THREE));
  take();
  presence.receive({ type: 'presence', room: 'r', counts_only: true, joins: [], leaves: [] });
  assert.equal(presence.countsOnly, true);
  assert.deepEqual(presence.members(), []);
  assert.deepEqual(take(), [['countsOnly', { countsOnly: true }]]);
  // Nothing but a fresh state changes the frozen view.
  presence.receive(diff({ leaves: [member('bob', meta('b1'))] }));
  presence.receive({ type: 'presence', room: 'r', counts_only: true, joins: [], leaves: [] });
  assert.deepEqual(take(), []);

  presence.receive(state([THREE[0], THREE[2], member('erin', meta('e1'))]));
  assert.equal(presence.countsOnly, false);
  assert.deepEqual(
    take().map(([type, d]) => [type, d.sub ?? d.countsOnly]),
    [
      ['countsOnly', false],
      ['leave', 'bob'],
      ['join', 'erin'],
      ['state', false],
    ],
  );
  assert.deepEqual(view(presence), [
    ['alice', ['a1', 'a2']],
    ['carol', ['c1']],
    ['erin', ['e1']],
  ]);
  presence.receive(diff({ joins: [member('bob', meta('b2'))] }));
  assert.deepEqual(take(), [['join', { sub: 'bob', metas: [meta('b2')] }]], 'diffs resume after the resync');
});

test('a counts-only state on connect lists no one and keeps the last view as the base', () => {
  const { presence, take } = recorded();
  presence.receive(state(THREE));
  take();
  presence.connected();
  presence.receive(state([], { counts_only: true }));
  assert.deepEqual(take(), [
    ['countsOnly', { countsOnly: true }],
    ['state', { members: [], countsOnly: true }],
  ]);
  presence.connected();
  presence.receive(state(THREE));
  assert.deepEqual(take(), [
    ['countsOnly', { countsOnly: false }],
    ['state', { members: presence.members(), countsOnly: false }],
  ]);
});

test('occupancy is kept and emitted when it changes', () => {
  const { presence, take } = recorded();
  assert.equal(presence.occupancy, null);
  presence.receive(occupancy(4, 3, 2));
  presence.receive(occupancy(4, 3, 2));
  presence.receive(occupancy(5, 3, 2));
  assert.deepEqual(take(), [
    ['occupancy', { connections: 4, users: 3, members: 2 }],
    ['occupancy', { connections: 5, users: 3, members: 2 }],
  ]);
  assert.deepEqual(presence.occupancy, { connections: 5, users: 3, members: 2 });
  presence.occupancy.connections = 0;
  assert.equal(presence.occupancy.connections, 5, 'the accessor hands out a copy');
});

test('members() hands out copies: changing them leaves the view alone', () => {
  const { presence } = recorded();
  presence.receive(state(THREE));
  presence.members()[0].metas.clear();
  assert.deepEqual(view(presence)[0], ['alice', ['a1', 'a2']]);
});

test('the client feeds its presence the frames of its socket and drops unfinished pages on reconnect', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'Date'] });
  const sockets = [];
  class Socket {
    constructor() {
      sockets.push(this);
    }
    send() {}
    close() {}
    frame(value) {
      this.onmessage({ data: JSON.stringify(value) });
    }
  }
  const client = new RoomcastClient({
    url: 'http://rooms.test',
    room: 'r',
    token: 'not.a.jwt',
    WebSocket: Socket,
    backoff: { initialMs: 100, random: () => 0 },
  });
  t.after(() => client.close());
  const { take } = recorded(client.presence);
  const welcome = {
    type: 'welcome',
    room: 'r',
    conn_id: 'c_1',
    epoch: 'e_1',
    head: 0,
    recovered: true,
    heartbeat_ms: 30_000,
  };

  sockets[0].frame(welcome);
  sockets[0].frame(state(THREE));
  sockets[0].frame(occupancy(4, 3, 3));
  assert.deepEqual(
    take().map(([type]) => type),
    ['join', 'join', 'join', 'state', 'occupancy'],
  );
  sockets[0].frame(state([member('ghost', meta('g1'))], { more: true }));
  sockets[0].onclose({ code: 1006, reason: '' });
  t.mock.timers.tick(1);
  assert.equal(sockets.length, 2, 'reconnected');
  sockets[1].frame(welcome);
  sockets[1].frame(state([THREE[0], THREE[2]]));
  assert.deepEqual(
    take().map(([type, d]) => [type, d.sub]),
    [
      ['leave', 'bob'],
      ['state', undefined],
    ],
  );
  assert.deepEqual(
    client.presence.members().map((m) => m.sub),
    ['alice', 'carol'],
  );
});
