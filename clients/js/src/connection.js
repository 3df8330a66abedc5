/**
 * Several rooms on one WebSocket: the client of the multiplexed route
 * `GET /v1/ws`.
 *
 * An application in many rooms would otherwise hold a socket, a heartbeat
 * and a token refresh per room. Here one socket (a {@link Link}, kept open
 * like the single-room client's) carries every room: `subscribe(room)`
 * returns a {@link Subscription} that gets that room's frames, routed by
 * their `room`. The connection remembers every subscription's position, so
 * after a reconnect it resubscribes them all in one `subscribe` frame, each
 * room with its `since` and `epoch`, and every room resumes without a gap or
 * a duplicate. A refreshed token is sent once and covers every room; the
 * rooms it no longer allows end (`unsubscribed`, reason `forbidden`).
 *
 * Events (all `CustomEvent`, payload in `detail`):
 * - `connected`: the server's `connected` frame, on every (re)connect
 * - `subscription`: a {@link Subscription} the server opened itself (a room
 *   of the token's `channels`), before its first frame is handled, so a
 *   listener can register handlers on it
 * - `state`: `{state, reconnects, code?, reason?, delayMs?}`
 * - `token`: `{exp}`, the server accepted a refreshed token
 * - `error`: an `error` frame naming no subscribed room, or a client-side
 *   failure `{code: "refresh_failed" | "bad_frame", message}`
 *
 * @module
 */

import { Link, wsBase } from './link.js';
import { Subscription } from './subscription.js';

/**
 * @typedef {object} ConnectionOptions
 * @property {string} url the worker's base URL
 * @property {string} token a JWT; each room needs the `subscribe` right in it
 * @property {() => string | Promise<string>} [refreshToken]
 * @property {number} [refreshBeforeMs=60000]
 * @property {number} [heartbeatMs] ping interval; defaults to the connection's `heartbeat_ms`
 * @property {number} [connectTimeoutMs=10000] a connect without `connected` by then is retried
 * @property {number} [stableAfterMs=5000]
 * @property {number} [maxPending=1000] unacknowledged publishes held per subscription
 * @property {import('./backoff.js').BackoffOptions} [backoff]
 * @property {typeof WebSocket} [WebSocket]
 */

export class RoomcastConnection extends EventTarget {
  #options;
  #link;
  /** @type {Map<string, import('./subscription.js').SubscriptionPort>} by room */
  #subscriptions = new Map();
  /** @type {object|null} the latest `connected` frame */
  #connected = null;
  #nextRef = 0;

  /** @param {ConnectionOptions} options */
  constructor(options) {
    super();
    if (!options?.url || !options.token) throw new TypeError('RoomcastConnection needs url and token');
    this.#options = { maxPending: 1000, ...options };
    this.#link = new Link(options, {
      url: () => new URL('/v1/ws', wsBase(options.url)),
      frame: (ws, frame) => this.#frame(ws, frame),
      emit: (type, detail) => this.#emit(type, detail),
      finished: () => this.#finished(),
    });
    this.#link.start();
  }

  /** @returns {import('./link.js').State} */
  get state() {
    return this.#link.state;
  }

  /** Reconnects so far (every connect after the first). */
  get reconnects() {
    return this.#link.reconnects;
  }

  /** The server's id of the current connection, `null` before the first `connected`. */
  get connId() {
    return this.#connected?.conn_id ?? null;
  }

  /** How many rooms the server lets one connection subscribe, `null` before the first `connected`. */
  get maxRooms() {
    return this.#connected?.max_rooms ?? null;
  }

  /** The subscribed rooms (those not ended), in the order they were subscribed. */
  get rooms() {
    return [...this.#subscriptions.keys()];
  }

  /**
   * Subscribes `room`, resuming after `since` of `epoch` when given (a
   * position saved from an earlier session). `handlers` are called with
   * each event's `detail`: `subscribed`, `message`, `ack`, `resync`,
   * `error`, `unsubscribed`, and `presence`: handlers for the presence
   * view's events (`state`, `join`, `leave`, `update`, `occupancy`,
   * `countsOnly`).
   *
   * @param {string} room
   * @param {Record<string, unknown>} [handlers]
   * @param {{since?: number|null, epoch?: string|null}} [position]
   * @returns {Subscription}
   */
  subscribe(room, handlers = {}, position = {}) {
    if (this.state === 'closed') throw new Error('connection is closed');
    if (this.#subscriptions.has(room)) throw new Error(`already subscribed to ${room}`);
    const { subscription, port } = this.#create(room, position);
    // Throws on a handler it does not know, before the room is kept.
    subscription.on(handlers);
    this.#subscriptions.set(room, port);
    if (this.state === 'open') this.#link.send(JSON.stringify({ type: 'subscribe', ...port.resubscribing() }));
    return subscription;
  }

  /** Closes for good: every subscription ends (`connection_closed`), pending publishes are rejected. */
  close() {
    this.#link.close();
  }

  /** A subscription of `room` and the port the connection reaches it by. */
  #create(room, position) {
    /** @type {import('./subscription.js').SubscriptionPort} */
    const port = {
      url: this.#options.url,
      maxPending: this.#options.maxPending,
      token: () => this.#link.token,
      isOpen: () => this.state === 'open',
      isCurrent: (ws) => this.#link.isCurrent(ws),
      send: (text) => this.#link.send(text),
      lost: (ws, reason) => this.#link.lost(ws, reason),
      paging: (ws) => this.#link.paging(ws),
      nextRef: () => String(++this.#nextRef),
      remove: () => {
        if (this.#subscriptions.get(room) === port) this.#subscriptions.delete(room);
      },
    };
    return { subscription: new Subscription(room, position, port), port };
  }

  #frame(ws, frame) {
    if (frame.type === 'connected') {
      this.#opened(ws, frame);
      return;
    }
    if (typeof frame.room !== 'string') {
      if (frame.type === 'error') this.#emit('error', frame);
      // Newer servers may send frames this client does not know: ignore them.
      return;
    }
    let port = this.#subscriptions.get(frame.room);
    if (!port && frame.type === 'subscribed') {
      port = this.#serverSide(frame.room);
    }
    if (port) port.receive(ws, frame);
    else if (frame.type === 'error') this.#emit('error', frame);
  }

  /**
   * The connection is up: every subscription goes out again, each from its
   * position, in one frame (a frame lists at most `max_rooms`, which is as
   * many as a connection may hold: more frames only if that limit shrank).
   */
  #opened(ws, connected) {
    this.#connected = connected;
    this.#link.opened(ws, { heartbeatMs: connected.heartbeat_ms, exp: connected.exp });
    this.#emit('connected', connected);
    // The server subscribes the token's channels itself, from their head,
    // before it reads ours: a room we resume from a position skips that
    // first `subscribed` and takes its stream from the answer to ours.
    const channels = new Set(connected.channels ?? []);
    const rooms = [...this.#subscriptions.entries()].map(([room, port]) => port.resubscribing(channels.has(room)));
    const perFrame = Math.max(1, connected.max_rooms || rooms.length);
    for (let i = 0; i < rooms.length; i += perFrame) {
      this.#link.send(JSON.stringify({ type: 'subscribe', rooms: rooms.slice(i, i + perFrame) }));
    }
  }

  /** A room the server subscribed this connection to (the token's `channels`). */
  #serverSide(room) {
    const { subscription, port } = this.#create(room, {});
    this.#subscriptions.set(room, port);
    this.#emit('subscription', subscription);
    return port;
  }

  #finished() {
    for (const port of [...this.#subscriptions.values()]) port.end('connection_closed');
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
