// Drives an earlier release of the worker (under `wrangler dev`, plain HTTP)
// into the storage states that tests/tests/upgrade.rs checks this release
// against: scripts/storage-fixtures.sh starts that release and runs
//
//   node scripts/storage-fixtures.mjs SCENARIO BASE_URL SECRET
//
// Every room is written with real requests, as clients, the bridge's HTTP
// publishes (messages from Kafka) and the bridge's room link would write it;
// the release decides what it stores. Each step checks the release's own
// answer, so a scenario that did not reach its state fails here, not later
// in the upgrade test. All generating runs use HISTORY_LIMIT=5.

import { createHmac } from 'node:crypto';
import WebSocket from 'ws';

const [scenario, base, secret] = process.argv.slice(2);
if (!scenario || !base || !secret) {
  console.error('usage: storage-fixtures.mjs SCENARIO BASE_URL SECRET');
  process.exit(2);
}

/** How long one answer or frame may take. */
const STEP_MS = 10_000;

const b64 = (value) => Buffer.from(value).toString('base64url');

/** An HS256 token, as every release verifies it. */
function token(claims) {
  const header = b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64(JSON.stringify({ exp: Math.floor(Date.now() / 1000) + 3600, ...claims }));
  const signature = createHmac('sha256', secret).update(`${header}.${body}`).digest('base64url');
  return `${header}.${body}.${signature}`;
}

const user = (sub) => token({ sub, rooms: ['*'], publish: ['*'] });
const ALICE = user('alice');
const BOB = user('bob');
const BRIDGE = token({ sub: 'bridge', role: 'bridge' });

function check(condition, what) {
  if (!condition) throw new Error(`${scenario}: ${what}`);
}

async function request(method, path, tok, body, headers = {}) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${tok}`, 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(STEP_MS),
  });
  const text = await response.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: response.status, json };
}

/** Publishes one message (`{data, id?}`) or a batch (`{messages}`) over HTTP. */
async function post(room, tok, body, trace) {
  const headers = trace ? { traceparent: trace } : {};
  const { status, json } = await request('POST', `/v1/rooms/${room}/messages`, tok, body, headers);
  check(status === 201, `POST ${room}: ${status} ${JSON.stringify(json)}`);
  return json;
}

async function stats(room) {
  const { status, json } = await request('GET', `/v1/rooms/${room}/stats`, ALICE);
  check(status === 200, `stats ${room}: ${status} ${JSON.stringify(json)}`);
  return json;
}

async function seqs(room) {
  const { status, json } = await request('GET', `/v1/rooms/${room}/messages?since=0&limit=1000`, ALICE);
  check(status === 200, `messages ${room}: ${status} ${JSON.stringify(json)}`);
  return json.messages.map((m) => m.seq);
}

/** A WebSocket whose frames are awaited one at a time, each within STEP_MS. */
class Socket {
  static async open(path) {
    const socket = new Socket(new WebSocket(`${base.replace(/^http/, 'ws')}${path}`));
    await new Promise((resolve, reject) => {
      socket.ws.once('open', resolve);
      socket.ws.once('error', reject);
      socket.ws.once('unexpected-response', (_, res) => reject(new Error(`${path}: ${res.statusCode}`)));
    });
    return socket;
  }

  constructor(ws) {
    this.ws = ws;
    this.frames = [];
    this.waiters = [];
    ws.on('message', (data) => {
      const frame = JSON.parse(data.toString());
      const waiter = this.waiters.shift();
      if (waiter) waiter(frame);
      else this.frames.push(frame);
    });
  }

  next() {
    if (this.frames.length) return Promise.resolve(this.frames.shift());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${scenario}: no frame within ${STEP_MS} ms`)), STEP_MS);
      this.waiters.push((frame) => {
        clearTimeout(timer);
        resolve(frame);
      });
    });
  }

  /** The next frame of `type`, skipping others. */
  async expect(type) {
    for (;;) {
      const frame = await this.next();
      if (frame.type === type) return frame;
    }
  }

  send(value) {
    this.ws.send(JSON.stringify(value));
  }

  async close() {
    const closed = new Promise((resolve) => this.ws.once('close', resolve));
    this.ws.close(1000, 'bye');
    await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, STEP_MS))]);
  }
}

/** Publishes each draft over a client socket, waiting for its ack. */
async function publishWs(room, tok, drafts) {
  const socket = await Socket.open(`/v1/rooms/${room}/ws?token=${tok}`);
  await socket.expect('welcome');
  for (const [i, draft] of drafts.entries()) {
    socket.send({ type: 'publish', ref: `r${i}`, ...draft });
    const ack = await socket.expect('ack');
    check(ack.ref === `r${i}`, `ack ${JSON.stringify(ack)}`);
  }
  await socket.close();
}

/** Waits (bounded) until the room reports `cursor`. */
async function awaitCursor(room, cursor) {
  for (let i = 0; i < 100; i++) {
    if ((await stats(room)).cursor === cursor) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${scenario}: ${room} never reported cursor ${cursor}`);
}

const trace = (n) => `00-${String(n).padStart(32, '0')}-${String(n).padStart(16, 'a')}-01`;

/** Eight messages over HTTP and WebSocket, with and without ids (and,
 * where the release has them, traces and one from Kafka): more than the
 * ring, so a release that trims has trimmed. */
async function plainRoom(room, { traces, kafka }) {
  const t = (n) => (traces ? trace(n) : undefined);
  await post(room, ALICE, { data: { n: 1, text: 'first' }, id: `${room}-1` }, t(1));
  await post(room, ALICE, { data: 'two, no id' });
  await post(room, ALICE, {
    messages: [
      { data: { n: 3, list: [1, 2, 3] }, id: `${room}-3` },
      { data: [4, 'four'] },
    ],
  }, t(3));
  await publishWs(room, BOB, [
    { data: { nested: { k: [true, null, 1.5] } }, id: `${room}-5` },
    { data: 'ünïcödé ✓ "quoted"' },
  ]);
  if (kafka) await post(room, BRIDGE, { data: { from: 'kafka', n: 7 }, id: `${room}-k7` });
  else await post(room, ALICE, { data: 7 });
  await post(room, ALICE, { data: { n: 8, last: true }, id: `${room}-8` }, t(8));
  const head = (await stats(room)).head;
  check(head === 8, `${room} head ${head}`);
}

/** A room the bridge linked (so it holds what the bridge has not
 * confirmed): six messages while the link is open (5 from Kafka), the
 * bridge confirms 3, the link closes, six more (9 from Kafka): the room
 * holds everything above the cursor, more than the ring. */
async function linkedRoom(room, { traces }) {
  const link = await Socket.open(`/v1/rooms/${room}/bridge?instance=fixtures&token=${BRIDGE}`);
  const welcome = await link.expect('welcome');
  check(welcome.cursor === 0, `${room} welcome ${JSON.stringify(welcome)}`);
  const draft = (n) => (n === 5 || n === 9
    ? [BRIDGE, { data: { from: 'kafka', n }, id: `${room}-k${n}` }]
    : [ALICE, n % 2 ? { data: { n }, id: `${room}-${n}` } : { data: { n } }]);
  for (let n = 1; n <= 6; n++) {
    const [tok, body] = draft(n);
    await post(room, tok, body, traces && n % 3 === 0 ? trace(n) : undefined);
  }
  for (const n of [1, 2, 3]) {
    const relayed = await link.expect('message');
    check(relayed.seq === n, `${room} link got ${JSON.stringify(relayed)}`);
  }
  link.send({ type: 'bridge_ack', seq: 3 });
  await awaitCursor(room, 3);
  await link.close();
  for (let n = 7; n <= 12; n++) {
    const [tok, body] = draft(n);
    await post(room, tok, body, traces && n % 3 === 0 ? trace(n) : undefined);
  }
  const s = await stats(room);
  check(s.head === 12 && s.cursor === 3, `${room} stats ${JSON.stringify(s)}`);
}

/** BRIDGE=on and HISTORY_LIMIT=5: ten messages, those numbered `kafka` from
 * Kafka, and no bridge confirms. */
async function holeRoom(room, kafka) {
  for (let n = 1; n <= 10; n++) {
    if (kafka.includes(n)) await post(room, BRIDGE, { data: { from: 'kafka', n }, id: `${room}-k${n}` });
    else await post(room, ALICE, { data: { n }, id: `${room}-${n}` });
  }
  const s = await stats(room);
  check(s.head === 10 && s.cursor === 0, `${room} stats ${JSON.stringify(s)}`);
}

const scenarios = {
  // The first release with rooms: no bridge, no traces.
  'schema-0': async () => {
    await plainRoom('s0-plain', { traces: false, kafka: false });
    await post('s0-short', ALICE, { data: 'one', id: 's0-short-1' });
    await post('s0-short', BOB, { data: { two: 2 } });
    const got = await seqs('s0-plain');
    check(got.join() === '4,5,6,7,8', `s0-plain keeps its newest 5: ${got}`);
  },
  'schema-1': async () => {
    await plainRoom('s1-plain', { traces: true, kafka: true });
    await linkedRoom('s1-linked', { traces: true });
  },
  'schema-2': async () => {
    await plainRoom('s2-plain', { traces: true, kafka: true });
    await linkedRoom('s2-linked', { traces: true });
  },
  'schema-3': async () => {
    await plainRoom('s3-plain', { traces: true, kafka: true });
    await linkedRoom('s3-linked', { traces: true });
  },
  'schema-3-hole': async () => {
    await holeRoom('s3-hole', [3]);
    // A hole wider than one message.
    await holeRoom('s3-wide', [3, 4]);
  },
};

const run = scenarios[scenario];
check(run, 'unknown scenario');
await run();
console.log(`${scenario}: done`);
