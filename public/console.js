/**
 * The demo console: joins a room with the roomcast client and shows what
 * happens: every message with its id, seq, origin, sender and end-to-end
 * latency, the connection state, reconnects and the `recovered` flag.
 * "Who is here" lists the room's members (a token with the `presence`
 * right sees them; any token sees the counts), redrawn from
 * `client.presence` on each of its events, since the view is the truth and
 * the events only say when it changed.
 *
 * Latency of the page's own messages is measured on one clock, from
 * `publish()` to the message coming back; for everyone else's it is now
 * minus the room's `ts` (the page's and the worker's clocks).
 *
 * The page may be served from anywhere: `?server=` (or the server field)
 * names the worker, this page's origin by default. A link may carry a
 * token in its fragment, `#token=<jwt>`, which browsers never send to a
 * server (not in the request, not in `Referer`); the page takes it out of
 * the address bar at once. Leaving a room and joining it again resumes
 * where the page left it. `window.roomcast` is the current client, for the
 * devtools console.
 *
 * @module
 */
import { RoomcastClient, randomId } from '/client/index.js';
import { RateChart } from '/chart.js';

const $ = (id) => document.getElementById(id);
const MAX_ROWS = 500;
const chart = new RateChart($('chart'));
/** Publish start times of this page's own messages, by idempotency key. */
const sentAt = new Map();
/** Where the page left each room (`since`, `epoch`), by server and room, to resume on the next join. */
const leftAt = new Map();
/** @type {RoomcastClient|null} */
let client = null;
/** The key of the room `client` is in, in `leftAt`. */
let joined = null;

function init() {
  const params = new URLSearchParams(location.search);
  if (params.has('room')) $('room').value = params.get('room');
  $('server').value = params.get('server') ?? location.origin;
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.has('token')) {
    $('token').value = fragment.get('token');
    // Keep the token out of the address bar and the browser history.
    history.replaceState(null, '', `${location.pathname}${location.search}`);
  }
  $('join').addEventListener('submit', (e) => {
    e.preventDefault();
    join($('server').value.trim() || location.origin, $('room').value.trim(), $('token').value.trim());
  });
  $('leave-button').addEventListener('click', leave);
  $('send').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = $('text').value;
    if (!text) return;
    $('text').value = '';
    send({ text });
  });
  $('burst-button').addEventListener('click', () => {
    for (let i = 1; i <= 20; i += 1) send({ text: `burst ${i}/20` });
  });
  setInterval(() => ($('chart-now').textContent = chart.draw()), 1000);
  chart.draw();
}

function join(url, room, token) {
  leave();
  joined = JSON.stringify([url, room]);
  const position = leftAt.get(joined);
  if (!position) $('messages').replaceChildren();
  client = new RoomcastClient({ url, room, token, ...position });
  window.roomcast = client;
  client.addEventListener('state', (e) => showState(e.detail));
  client.addEventListener('welcome', (e) => {
    const w = e.detail;
    log(`welcome: epoch ${w.epoch}, head ${w.head}, recovered ${w.recovered}, heartbeat ${w.heartbeat_ms} ms`);
    if (w.catch_up) log(`catching up: paging seq ${w.catch_up.since + 1}…${w.catch_up.until} over HTTP`);
    $('epoch').textContent = w.epoch;
  });
  client.addEventListener('message', (e) => showMessage(e.detail));
  client.addEventListener('resync', (e) => {
    log(`resync: messages after ${e.detail.since} are gone (now epoch ${e.detail.epoch}, head ${e.detail.head})`, true);
  });
  client.addEventListener('error', (e) => log(`error ${e.detail.code}: ${e.detail.message}`, true));
  client.addEventListener('token', (e) => log(`token refreshed, exp ${e.detail.exp}`));
  watchPresence(client.presence);
  setJoined(true);
}

function leave() {
  if (client?.epoch) leftAt.set(joined, { since: client.lastSeq, epoch: client.epoch });
  client?.close();
  client = null;
  window.roomcast = null;
  setJoined(false);
}

function watchPresence(presence) {
  const redraw = () => showMembers(presence);
  for (const type of ['state', 'join', 'leave', 'update', 'countsOnly']) presence.addEventListener(type, redraw);
  // The first state's joins are who was already here, not news.
  let listed = false;
  presence.addEventListener('state', () => (listed = true));
  presence.addEventListener('join', (e) => listed && log(`${e.detail.sub} joined`));
  presence.addEventListener('leave', (e) => listed && log(`${e.detail.sub} left`));
  presence.addEventListener('countsOnly', (e) =>
    log(e.detail.countsOnly ? 'presence: the room only counts now' : 'presence: the room lists its members again'),
  );
  presence.addEventListener('occupancy', (e) => showOccupancy(e.detail));
}

function showMembers(presence) {
  $('presence').dataset.countsOnly = String(presence.countsOnly);
  $('counts-only').hidden = !presence.countsOnly;
  const rows = presence.members().map(({ sub, metas }) => {
    const row = document.createElement('tr');
    row.dataset.sub = sub;
    const infos = new Set([...metas.values()].filter((m) => m.info !== undefined).map((m) => infoText(m.info)));
    row.append(cell('sub', sub), cell('devices', String(metas.size)), cell('info', [...infos].join(', ')));
    return row;
  });
  $('members').replaceChildren(...rows);
}

/** `info` is any JSON value; a string shows as itself. */
function infoText(info) {
  return typeof info === 'string' ? info : JSON.stringify(info);
}

function showOccupancy(occupancy) {
  for (const name of ['connections', 'users', 'members']) {
    $(`occupancy-${name}`).textContent = occupancy ? String(occupancy[name]) : '–';
  }
}

function send(data) {
  if (!client) return;
  const started = performance.now();
  const id = randomId();
  sentAt.set(id, started);
  client.publish(data, { id }).catch((e) => {
    sentAt.delete(id);
    log(`publish failed: ${e.message}`, true);
  });
}

function showState({ state, reconnects, recovered, code, reason, delayMs }) {
  $('state').textContent = state;
  $('state').dataset.state = state;
  $('reconnects').textContent = String(reconnects);
  $('recovered').textContent = state === 'open' || reconnects > 0 ? String(recovered) : '–';
  if (state === 'reconnecting') log(`closed (${code} ${reason || ''}), reconnecting in ${delayMs} ms`);
  if (state === 'closed') log(`closed: ${reason}`, code !== undefined);
}

function showMessage(m) {
  const started = sentAt.get(m.id);
  sentAt.delete(m.id);
  const latency = started === undefined ? Date.now() - m.ts : performance.now() - started;
  chart.add(latency);
  $('last-seq').textContent = String(m.seq);
  const row = document.createElement('tr');
  row.dataset.seq = String(m.seq);
  row.dataset.id = m.id;
  if (started !== undefined) row.classList.add('own');
  const cells = [m.seq, m.id, m.origin, m.sender, `${latency.toFixed(1)} ms`, JSON.stringify(m.data)];
  const classes = ['seq', 'id', 'origin', 'sender', 'latency', 'data'];
  row.append(...cells.map((text, i) => cell(classes[i], String(text))));
  const list = $('messages');
  list.prepend(row);
  while (list.childElementCount > MAX_ROWS) list.lastElementChild.remove();
}

function cell(className, text) {
  const td = document.createElement('td');
  td.className = className;
  td.textContent = text;
  return td;
}

function setJoined(joined) {
  for (const id of ['text', 'send-button', 'burst-button', 'leave-button']) $(id).disabled = !joined;
  if (!joined) {
    showState({ state: 'idle', reconnects: 0, recovered: false });
    $('members').replaceChildren();
    showOccupancy(null);
  }
}

function log(text, isError = false) {
  const item = document.createElement('li');
  item.textContent = `${new Date().toISOString().slice(11, 23)} ${text}`;
  if (isError) item.className = 'error';
  $('log').prepend(item);
  while ($('log').childElementCount > 200) $('log').lastElementChild.remove();
}

init();
