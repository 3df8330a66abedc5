/**
 * The roomcast WebSocket client: one room, kept connected.
 *
 * The application sees one ordered stream of messages with no duplicate and
 * no gap, whatever happens to the socket underneath: the client resumes with
 * `since`/`epoch` after every drop, drops what it already delivered, and
 * reconnects itself when it notices a gap. Publishes carry an idempotency key
 * and are re-sent after a reconnect until acknowledged, so a publish is
 * neither lost nor doubled. When the room cannot resume (history trimmed, new
 * epoch) the client says so with a `resync` event instead of pretending.
 *
 * Events (all `CustomEvent`, payload in `detail`):
 * - `message`: a room message `{room, id, seq, ts, sender, origin, data}`
 * - `ack`: a publish was stored `{ref, id, seq, duplicate}`
 * - `error`: an `error` frame from the room `{code, message, ref?}`, or a
 *   client-side failure `{code: "refresh_failed" | "bad_frame", message}`
 * - `state`: `{state, reconnects, recovered, code?, reason?, delayMs?}`
 * - `welcome`: the room's `welcome` frame, on every (re)connect
 * - `resync`: `{previousEpoch, since, epoch, head}`, messages were missed
 * - `token`: `{exp}`, the room accepted a refreshed token
 *
 * Who is in the room is `client.presence` (see presence.js), with events of
 * its own; the client feeds it the room's presence frames.
 *
 * @module
 */

import { Backoff } from './backoff.js';
import { randomId } from './id.js';
import { Presence } from './presence.js';
import { Sequence } from './sequence.js';
import { refreshDelay, tokenExpiry } from './token.js';

/** @typedef {'connecting'|'open'|'reconnecting'|'closed'} State */

/**
 * @typedef {object} ClientOptions
 * @property {string} url the worker's base URL (`https://…`, `wss://…`, or a page's `location.origin`)
 * @property {string} room the room to join
 * @property {string} token a JWT with the `subscribe` right for the room
 * @property {() => string | Promise<string>} [refreshToken] returns a fresh token; called
 *   `refreshBeforeMs` before the current one expires, on `token_expiring` and after a 4001 close
 * @property {number} [refreshBeforeMs=60000]
 * @property {number|null} [since] resume after this seq (with `epoch`), e.g. from a previous session
 * @property {string|null} [epoch]
 * @property {number} [heartbeatMs] ping interval; defaults to the room's `heartbeat_ms`
 * @property {number} [connectTimeoutMs=10000] a connect without `welcome` by then is retried
 * @property {number} [stableAfterMs=5000] a connection open this long, its `catch_up` paged,
 *   has proved itself: the next reconnect starts from the shortest backoff again
 * @property {number} [maxPending=1000] unacknowledged publishes held across reconnects
 * @property {import('./backoff.js').BackoffOptions} [backoff]
 * @property {typeof WebSocket} [WebSocket] the implementation (Node < 22: the `ws` package)
 */

/**
 * @typedef {object} Ack
 * @property {string} ref
 * @property {string} id
 * @property {number} seq
 * @property {boolean} duplicate
 */

/** Close codes after which reconnecting cannot help. */
const TERMINAL = new Map([
  [4003, 'rights revoked'],
  [4009, 'superseded'],
]);
const TOKEN_EXPIRED = 4001;
/** `WebSocket.CLOSING`, the same in browsers and the ws package. */
const CLOSING = 2;
const WATCH_TICK_MS = 250;
const STALLED_CLOSE_MS = 1000;
/** The longest `setTimeout` delay browsers and Node honour. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class RoomcastClient extends EventTarget {
  #options;
  #WebSocket;
  #token;
  #exp;
  #sequence;
  #backoff;
  #presence = new Presence();
  /** @type {WebSocket|null} */
  #ws = null;
  /** @type {State} */
  #state = 'connecting';
  #reconnects = 0;
  #recovered = false;
  /**
   * The `publish` frames not yet acknowledged, serialised once, by `ref`.
   * @type {Map<string, {text: string, resolve: (ack: Ack) => void, reject: (e: Error) => void}>}
   */
  #pending = new Map();
  #nextRef = 0;
  #lastHeard = 0;
  /** @type {Promise<void>|null} */
  #refreshing = null;
  /**
   * While the client pages the history a `welcome.catch_up` pointed it to,
   * the live messages that arrive meanwhile, held back in order.
   * @type {object[]|null}
   */
  #caughtUpLater = null;
  /**
   * The connection that has yet to prove itself before the backoff is
   * reset: `aged` once it stayed open `stableAfterMs`, `paging` until its
   * `catch_up` is paged. A `welcome` alone proves nothing: a room that
   * welcomes and then fails (a catch-up it cannot serve, a crash right
   * after the join) would otherwise be reconnected to without pause.
   * @type {{ws: WebSocket, aged: boolean, paging: boolean}|null}
   */
  #trial = null;
  #timers = { connect: null, reconnect: null, watch: null, refresh: null, stable: null };

  /** @param {ClientOptions} options */
  constructor(options) {
    super();
    if (!options?.url || !options.room || !options.token) {
      throw new TypeError('RoomcastClient needs url, room and token');
    }
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (!this.#WebSocket) {
      throw new TypeError('no WebSocket implementation: pass options.WebSocket (the ws package on Node < 22)');
    }
    this.#options = {
      refreshBeforeMs: 60_000,
      connectTimeoutMs: 10_000,
      stableAfterMs: 5000,
      maxPending: 1000,
      ...options,
    };
    this.#token = options.token;
    this.#exp = tokenExpiry(options.token);
    this.#sequence = new Sequence(options.since ?? null, options.epoch ?? null);
    this.#backoff = new Backoff(options.backoff);
    this.#open();
  }

  /** @returns {State} */
  get state() {
    return this.#state;
  }

  /** Reconnects so far (every connect after the first). */
  get reconnects() {
    return this.#reconnects;
  }

  /** Whether the latest connect resumed without loss. */
  get recovered() {
    return this.#recovered;
  }

  /** The last seq delivered to the application: persist it with `epoch` to resume later. */
  get lastSeq() {
    return this.#sequence.lastSeq;
  }

  get epoch() {
    return this.#sequence.epoch;
  }

  /**
   * Who is in the room: the members (with a token carrying the `presence`
   * right) and the occupancy counts, with `state`, `join`, `leave`,
   * `update`, `occupancy` and `countsOnly` events.
   * @returns {Presence}
   */
  get presence() {
    return this.#presence;
  }

  /** Publishes not yet acknowledged. */
  get pending() {
    return this.#pending.size;
  }

  /**
   * Publishes `data` to the room. Resolves with the room's `ack` once the
   * message is stored; held and re-sent (same idempotency key) across
   * reconnects; rejects on an `error` frame for it or on `close()`.
   *
   * @param {unknown} data any JSON value
   * @param {{id?: string}} [options] `id`: your idempotency key (default: a random UUID)
   * @returns {Promise<Ack>}
   */
  publish(data, { id } = {}) {
    if (this.#state === 'closed') return Promise.reject(new Error('client is closed'));
    if (this.#pending.size >= this.#options.maxPending) {
      return Promise.reject(new Error(`more than ${this.#options.maxPending} publishes pending`));
    }
    const ref = String(++this.#nextRef);
    const text = JSON.stringify({ type: 'publish', ref, id: id ?? randomId(), data });
    return new Promise((resolve, reject) => {
      this.#pending.set(ref, { text, resolve, reject });
      if (this.#state === 'open') this.#send(text);
    });
  }

  /**
   * Messages after `since` from the REST history, for an application that
   * got `resync` and wants to fill in what it missed.
   *
   * @param {{since?: number, limit?: number}} [query]
   * @returns {Promise<{room: string, epoch: string, head: number, messages: object[], truncated: boolean}>}
   */
  async history({ since = 0, limit = 100 } = {}) {
    return this.#get('messages', { since, limit }, 'history');
  }

  /**
   * A page of the room's members over HTTP, sorted by `sub`, after `after`;
   * `next` is the `after` of the following page (`null`: the last). Readable
   * even when the room only counts. Without the `presence` right: no
   * members, only the occupancy.
   *
   * @param {{after?: string, limit?: number}} [query]
   * @returns {Promise<{room: string, occupancy: {connections: number, users: number, members: number},
   *   counts_only: boolean, members: {sub: string, metas: {conn_id: string, info?: unknown}[]}[], next: string|null}>}
   */
  async presenceMembers({ after, limit = 100 } = {}) {
    return this.#get('presence', { ...(after === undefined ? {} : { after }), limit }, 'presence');
  }

  /** GETs one of the room's HTTP resources with the current token. */
  async #get(resource, query, what) {
    const url = new URL(`/v1/rooms/${encodeURIComponent(this.#options.room)}/${resource}`, httpBase(this.#options.url));
    for (const [name, value] of Object.entries(query)) url.searchParams.set(name, String(value));
    const response = await fetch(url, { headers: { authorization: `Bearer ${this.#token}` } });
    const body = await response.json();
    if (!response.ok) throw new Error(`${what}: ${response.status} ${body?.error?.code ?? ''}`);
    return body;
  }

  /** Leaves the room for good; pending publishes are rejected. */
  close() {
    if (this.#state === 'closed') return;
    const ws = this.#ws;
    this.#detach();
    if (ws) closeQuietly(ws, 1000, 'client closed');
    this.#finish('closed by the application');
  }

  #open() {
    const url = new URL(`/v1/rooms/${encodeURIComponent(this.#options.room)}/ws`, wsBase(this.#options.url));
    for (const [name, value] of Object.entries(this.#sequence.resumeQuery())) {
      url.searchParams.set(name, value);
    }
    // Browsers cannot set headers on a WebSocket: the token travels as a subprotocol.
    const ws = new this.#WebSocket(url.toString(), ['roomcast.v1', `bearer.${this.#token}`]);
    this.#ws = ws;
    this.#timers.connect = setTimeout(() => this.#lost(ws, 'no welcome in time'), this.#options.connectTimeoutMs);
    ws.onmessage = (event) => this.#receive(ws, event.data);
    ws.onclose = (event) => this.#closed(ws, event.code, event.reason);
    ws.onerror = () => {};
  }

  #receive(ws, text) {
    if (ws !== this.#ws) return;
    this.#lastHeard = Date.now();
    if (text === 'pong') return;
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      this.#emit('error', { code: 'bad_frame', message: `not JSON: ${String(text).slice(0, 80)}` });
      return;
    }
    switch (frame.type) {
      case 'welcome':
        return this.#welcome(ws, frame);
      case 'message':
        return this.#message(ws, frame);
      case 'ack':
        return this.#ack(frame);
      case 'error':
        return this.#error(frame);
      case 'auth_ok':
        this.#exp = frame.exp;
        this.#scheduleRefresh();
        return this.#emit('token', { exp: frame.exp });
      case 'token_expiring':
        return void this.#refresh();
      case 'presence_state':
      case 'presence':
      case 'occupancy':
        return this.#presence.receive(frame);
      default:
        // Newer servers may send frames this client does not know: ignore them.
        return undefined;
    }
  }

  #welcome(ws, welcome) {
    clearTimeout(this.#timers.connect);
    const resync = this.#sequence.welcome(welcome);
    this.#recovered = welcome.recovered;
    this.#exp = welcome.exp ?? this.#exp;
    this.#presence.connected();
    this.#trial = { ws, aged: false, paging: Boolean(welcome.catch_up) };
    this.#timers.stable = setTimeout(() => this.#proved(ws, 'aged'), this.#options.stableAfterMs);
    this.#setState('open');
    this.#emit('welcome', welcome);
    if (resync) this.#emit('resync', resync);
    this.#watch(ws, this.#options.heartbeatMs ?? welcome.heartbeat_ms);
    this.#scheduleRefresh();
    for (const { text } of this.#pending.values()) this.#send(text);
    this.#caughtUpLater = null;
    if (welcome.catch_up) void this.#catchUp(ws, welcome.catch_up);
  }

  /**
   * The room had more to replay than one turn may carry: it sent nothing
   * and pointed here instead. Pages the history up to `until`, delivering it
   * in order, then the live messages that came meanwhile.
   */
  async #catchUp(ws, { since, until }) {
    const held = [];
    this.#caughtUpLater = held;
    try {
      let from = since;
      while (from < until) {
        const page = await this.history({ since: from, limit: 1000 });
        if (ws !== this.#ws) return;
        const last = page.messages.at(-1);
        if (!last) throw new Error(`the history ends before seq ${until}`);
        for (const message of page.messages) {
          if (message.seq <= until) this.#deliver(ws, message);
        }
        from = last.seq;
      }
    } catch (e) {
      this.#lost(ws, `catching up: ${e.message}`);
      return;
    }
    if (ws !== this.#ws || this.#caughtUpLater !== held) return;
    this.#caughtUpLater = null;
    for (const message of held) this.#deliver(ws, message);
    this.#proved(ws, 'paging');
  }

  /** Records what `ws` has proved; once it is both aged and paged, failures start over from the shortest backoff. */
  #proved(ws, what) {
    const trial = this.#trial;
    if (!trial || trial.ws !== ws || ws !== this.#ws) return;
    if (what === 'aged') trial.aged = true;
    else trial.paging = false;
    if (trial.aged && !trial.paging) {
      this.#trial = null;
      this.#backoff.reset();
    }
  }

  #message(ws, message) {
    if (this.#caughtUpLater) {
      this.#caughtUpLater.push(message);
      return undefined;
    }
    return this.#deliver(ws, message);
  }

  #deliver(ws, message) {
    switch (this.#sequence.accept(message.seq)) {
      case 'deliver':
        return this.#emit('message', message);
      case 'gap':
        // The room never skips a seq on one connection; a resume fills it in.
        return this.#lost(ws, `gap before seq ${message.seq}`);
      default:
        return undefined;
    }
  }

  #ack(ack) {
    const entry = this.#pending.get(ack.ref);
    if (entry) {
      this.#pending.delete(ack.ref);
      entry.resolve(ack);
    }
    this.#emit('ack', ack);
  }

  #error(error) {
    const entry = error.ref === undefined ? undefined : this.#pending.get(error.ref);
    if (entry) {
      this.#pending.delete(error.ref);
      entry.reject(Object.assign(new Error(`${error.code}: ${error.message}`), { code: error.code }));
    }
    this.#emit('error', error);
  }

  #closed(ws, code, reason) {
    if (ws !== this.#ws) return;
    this.#detach();
    if (TERMINAL.has(code)) {
      this.#finish(`${code} ${TERMINAL.get(code)}`, code);
      return;
    }
    if (code === TOKEN_EXPIRED && !this.#options.refreshToken) {
      this.#finish(`${code} token expired and no refreshToken callback`, code);
      return;
    }
    this.#reconnectLater(code, reason);
  }

  /** Gives up on `ws` without waiting for its close handshake, and reconnects. */
  #lost(ws, reason) {
    if (ws !== this.#ws) return;
    this.#detach();
    closeQuietly(ws, 4000, reason);
    this.#reconnectLater(4000, reason);
  }

  #reconnectLater(code, reason) {
    const delayMs = this.#backoff.next();
    this.#setState('reconnecting', { code, reason, delayMs });
    this.#timers.reconnect = setTimeout(async () => {
      if (this.#tokenExpiresWithin(this.#options.refreshBeforeMs)) await this.#refresh();
      if (this.#state === 'closed') return;
      this.#reconnects += 1;
      this.#open();
    }, delayMs);
  }

  /**
   * Pings every `intervalMs` and watches the socket: two silent intervals
   * mean the path is dead, and a close handshake the server does not finish
   * (workerd under `wrangler dev` holds the TCP connection ~10 s after its
   * close frame) is cut short, since the RFC lets the client give up on it.
   */
  #watch(ws, intervalMs) {
    clearInterval(this.#timers.watch);
    const deadAfterMs = 2 * intervalMs + 1000;
    let lastPing = Date.now();
    let closingSince = null;
    this.#timers.watch = setInterval(() => {
      const now = Date.now();
      if (ws.readyState === CLOSING) {
        closingSince ??= now;
        if (now - closingSince >= STALLED_CLOSE_MS) this.#lost(ws, 'close handshake stalled');
        return;
      }
      if (now - this.#lastHeard > deadAfterMs) {
        this.#lost(ws, 'no pong');
        return;
      }
      if (now - lastPing >= intervalMs) {
        lastPing = now;
        this.#send('ping');
      }
    }, Math.min(intervalMs, WATCH_TICK_MS));
  }

  #scheduleRefresh() {
    clearTimeout(this.#timers.refresh);
    if (!this.#options.refreshToken || this.#exp === null) return;
    const delay = refreshDelay(this.#exp, Date.now(), this.#options.refreshBeforeMs);
    this.#timers.refresh = setTimeout(() => this.#refresh(), Math.min(delay, MAX_TIMER_MS));
  }

  /** Fetches a fresh token and, when connected, hands it to the room. */
  #refresh() {
    if (!this.#options.refreshToken) return Promise.resolve();
    this.#refreshing ??= (async () => {
      try {
        this.#token = await this.#options.refreshToken();
        this.#exp = tokenExpiry(this.#token) ?? this.#exp;
        if (this.#state === 'open') this.#send(JSON.stringify({ type: 'auth', token: this.#token }));
      } catch (e) {
        this.#emit('error', { code: 'refresh_failed', message: String(e?.message ?? e) });
      } finally {
        this.#refreshing = null;
      }
    })();
    return this.#refreshing;
  }

  #tokenExpiresWithin(ms) {
    return this.#exp !== null && this.#exp * 1000 - Date.now() < ms;
  }

  #send(text) {
    try {
      this.#ws?.send(text);
    } catch {
      // The socket is closing; its close event reconnects and re-sends.
    }
  }

  #detach() {
    const ws = this.#ws;
    // A socket dropped while connecting still reports an error: keep a listener so it goes nowhere.
    if (ws) {
      ws.onmessage = ws.onclose = null;
      ws.onerror = () => {};
    }
    this.#ws = null;
    this.#trial = null;
    clearTimeout(this.#timers.connect);
    clearTimeout(this.#timers.stable);
    clearInterval(this.#timers.watch);
  }

  #finish(reason, code) {
    clearTimeout(this.#timers.reconnect);
    clearTimeout(this.#timers.refresh);
    this.#setState('closed', { reason, code });
    for (const { reject } of this.#pending.values()) reject(new Error(`client closed: ${reason}`));
    this.#pending.clear();
  }

  #setState(state, extra = {}) {
    this.#state = state;
    this.#emit('state', { state, reconnects: this.#reconnects, recovered: this.#recovered, ...extra });
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

function wsBase(url) {
  return url.replace(/^http(s?):/, 'ws$1:');
}

function httpBase(url) {
  return url.replace(/^ws(s?):/, 'http$1:');
}

function closeQuietly(ws, code, reason) {
  try {
    ws.close(code, reason.slice(0, 120));
  } catch {
    // Already closing.
  }
}
