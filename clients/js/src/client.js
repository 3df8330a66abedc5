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
 * The socket is kept by link.js and the order by stream.js, which the
 * multiplexed connection (connection.js) shares: this module is what one
 * room on its own route adds, the URL with the resume and the frames.
 *
 * @module
 */

import { randomId } from './id.js';
import { Link, wsBase } from './link.js';
import { Presence } from './presence.js';
import { readHistory, readMembers } from './rest.js';
import { RoomStream } from './stream.js';

/** @typedef {import('./link.js').State} State */

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

export class RoomcastClient extends EventTarget {
  #options;
  #link;
  #stream;
  #presence = new Presence();
  #recovered = false;
  /**
   * The `publish` frames not yet acknowledged, serialised once, by `ref`.
   * @type {Map<string, {text: string, resolve: (ack: Ack) => void, reject: (e: Error) => void}>}
   */
  #pending = new Map();
  #nextRef = 0;

  /** @param {ClientOptions} options */
  constructor(options) {
    super();
    if (!options?.url || !options.room || !options.token) {
      throw new TypeError('RoomcastClient needs url, room and token');
    }
    this.#options = { maxPending: 1000, ...options };
    this.#link = new Link(options, {
      url: () => this.#url(),
      frame: (ws, frame) => this.#frame(ws, frame),
      emit: (type, detail) => this.#emit(type, detail),
      finished: (reason) => this.#finished(reason),
      stateDetail: () => ({ recovered: this.#recovered }),
    });
    this.#stream = new RoomStream(options.since ?? null, options.epoch ?? null, {
      deliver: (message) => this.#emit('message', message),
      isCurrent: (ws) => this.#link.isCurrent(ws),
      lost: (ws, reason) => this.#link.lost(ws, reason),
      paging: (ws) => this.#link.paging(ws),
      history: (query) => this.history(query),
    });
    this.#link.start();
  }

  /** @returns {State} */
  get state() {
    return this.#link.state;
  }

  /** Reconnects so far (every connect after the first). */
  get reconnects() {
    return this.#link.reconnects;
  }

  /** Whether the latest connect resumed without loss. */
  get recovered() {
    return this.#recovered;
  }

  /** The last seq delivered to the application: persist it with `epoch` to resume later. */
  get lastSeq() {
    return this.#stream.lastSeq;
  }

  get epoch() {
    return this.#stream.epoch;
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
    if (this.state === 'closed') return Promise.reject(new Error('client is closed'));
    if (this.#pending.size >= this.#options.maxPending) {
      return Promise.reject(new Error(`more than ${this.#options.maxPending} publishes pending`));
    }
    const ref = String(++this.#nextRef);
    const text = JSON.stringify({ type: 'publish', ref, id: id ?? randomId(), data });
    return new Promise((resolve, reject) => {
      this.#pending.set(ref, { text, resolve, reject });
      if (this.state === 'open') this.#link.send(text);
    });
  }

  /**
   * Messages after `since` from the REST history, for an application that
   * got `resync` and wants to fill in what it missed.
   *
   * @param {{since?: number, limit?: number}} [query]
   * @returns {Promise<{room: string, epoch: string, head: number, messages: object[], truncated: boolean}>}
   */
  async history(query) {
    return readHistory(this.#options.url, this.#link.token, this.#options.room, query);
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
  async presenceMembers(query) {
    return readMembers(this.#options.url, this.#link.token, this.#options.room, query);
  }

  /** Leaves the room for good; pending publishes are rejected. */
  close() {
    this.#link.close();
  }

  #url() {
    const url = new URL(`/v1/rooms/${encodeURIComponent(this.#options.room)}/ws`, wsBase(this.#options.url));
    for (const [name, value] of Object.entries(this.#stream.resumeQuery())) {
      url.searchParams.set(name, value);
    }
    return url;
  }

  #frame(ws, frame) {
    switch (frame.type) {
      case 'welcome':
        return this.#welcome(ws, frame);
      case 'message':
        return this.#stream.message(ws, frame);
      case 'ack':
        return this.#ack(frame);
      case 'error':
        return this.#error(frame);
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
    const resync = this.#stream.welcome(welcome);
    this.#recovered = welcome.recovered;
    this.#presence.connected();
    this.#link.opened(ws, { heartbeatMs: welcome.heartbeat_ms, exp: welcome.exp });
    this.#emit('welcome', welcome);
    if (resync) this.#emit('resync', resync);
    for (const { text } of this.#pending.values()) this.#link.send(text);
    if (welcome.catch_up) void this.#stream.catchUp(ws, welcome.catch_up);
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

  #finished(reason) {
    for (const { reject } of this.#pending.values()) reject(new Error(`client closed: ${reason}`));
    this.#pending.clear();
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
