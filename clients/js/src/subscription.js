/**
 * One room on a multiplexed connection (see connection.js).
 *
 * What the single-room client is for its room, a subscription is for one
 * room of many sharing a socket: its messages in seq order and each once
 * (a {@link RoomStream} fed the room's `subscribed` and `message` frames),
 * its presence view, and its publishes, held until acknowledged and re-sent
 * after a resubscribe. Frames reach it from the connection, which routes
 * them by `room`; the connection also tells it when a new socket is about
 * to resubscribe it and when it ends. Those entry points go through the
 * `port` the connection hands in, so that the object applications hold
 * shows only the application's side.
 *
 * A subscription is `subscribing` until the room's `subscribed` frame,
 * `subscribed` from then on (`subscribing` again from each reconnect until
 * the room answers the resubscribe), and `ended` for good after `unsubscribe()`, an `unsubscribed` frame, a
 * refused subscribe or the connection's close. Messages are taken only
 * while `subscribed`: frames of an earlier subscription of the same room
 * may still be on the way.
 *
 * Events (all `CustomEvent`, payload in `detail`):
 * - `subscribed`: the room's `subscribed` frame, on every (re)subscribe
 * - `message`: a room message `{room, id, seq, ts, sender, origin, data}`
 * - `ack`: a publish was stored `{room, ref, id, seq, duplicate}`
 * - `resync`: `{previousEpoch, since, epoch, head}`, messages were missed
 * - `error`: an `error` frame naming the room `{room, code, message, ref?}`
 * - `unsubscribed`: `{room, reason}`, the subscription ended: `client`
 *   (`unsubscribe()`), `forbidden` (a refreshed token no longer allows
 *   the room), `closed` (the room ended it), `refused` (the subscribe was
 *   refused; `code` says why), `connection_closed`
 *
 * @module
 */

import { randomId } from './id.js';
import { Presence } from './presence.js';
import { readHistory, readMembers } from './rest.js';
import { RoomStream } from './stream.js';

/** @typedef {'subscribing'|'subscribed'|'ended'} SubscriptionStatus */

/**
 * What a subscription needs of its connection, and where the connection
 * finds the subscription's entry points (filled in by the constructor).
 *
 * @typedef {object} SubscriptionPort
 * @property {string} url the worker's base URL, for the HTTP resources
 * @property {number} maxPending
 * @property {() => string} token the connection's newest token
 * @property {() => boolean} isOpen whether frames can be sent now
 * @property {(ws: WebSocket) => boolean} isCurrent
 * @property {(text: string) => void} send
 * @property {(ws: WebSocket, reason: string) => void} lost
 * @property {(ws: WebSocket) => () => void} paging
 * @property {() => string} nextRef a `ref` unique on the connection
 * @property {() => void} remove forget this subscription (it ended)
 * @property {(ws: WebSocket, frame: {type: string}) => void} [receive] set by the subscription
 * @property {(serverSide: boolean) => {room: string, since?: number, epoch?: string}} [resubscribing] set by the subscription
 * @property {(reason: string, extra?: object) => void} [end] set by the subscription
 */

/** Handler names `subscribe()` takes, each given the event's `detail`. */
const EVENTS = ['subscribed', 'message', 'ack', 'resync', 'error', 'unsubscribed'];
const PRESENCE_EVENTS = ['state', 'join', 'leave', 'update', 'occupancy', 'countsOnly'];

export class Subscription extends EventTarget {
  #room;
  #port;
  #stream;
  #presence = new Presence();
  /** @type {SubscriptionStatus} */
  #status = 'subscribing';
  #recovered = false;
  /** The socket the room's `subscribed` came on. @type {WebSocket|null} */
  #ws = null;
  /** `subscribed` frames to pass over: the server's own for a channel room we resume. */
  #skipSubscribed = 0;
  /**
   * The `publish` frames not yet acknowledged, serialised once, by `ref`.
   * @type {Map<string, {text: string, resolve: (ack: object) => void, reject: (e: Error) => void}>}
   */
  #pending = new Map();

  /**
   * @param {string} room
   * @param {{since?: number|null, epoch?: string|null}} position where to resume
   * @param {SubscriptionPort} port
   */
  constructor(room, { since = null, epoch = null }, port) {
    super();
    this.#room = room;
    this.#port = port;
    this.#stream = new RoomStream(since, epoch, {
      deliver: (message) => this.#emit('message', message),
      isCurrent: (ws) => ws === this.#ws && this.#status === 'subscribed' && port.isCurrent(ws),
      lost: (ws, reason) => port.lost(ws, reason),
      paging: (ws) => port.paging(ws),
      history: (query) => this.history(query),
    });
    port.receive = (ws, frame) => this.#receive(ws, frame);
    port.resubscribing = (serverSide) => this.#resubscribing(serverSide);
    port.end = (reason, extra) => this.#end(reason, extra);
  }

  /**
   * Registers handlers, each called with its event's `detail`; `presence`
   * takes handlers for the presence view's events.
   *
   * @param {Record<string, unknown>} handlers
   */
  on(handlers) {
    for (const [name, handler] of Object.entries(handlers)) {
      if (name === 'presence') {
        listen(this.#presence, PRESENCE_EVENTS, /** @type {Record<string, Function>} */ (handler));
      } else {
        listen(this, EVENTS, { [name]: /** @type {Function} */ (handler) });
      }
    }
    return this;
  }

  get room() {
    return this.#room;
  }

  /** @returns {SubscriptionStatus} */
  get status() {
    return this.#status;
  }

  /** Whether the latest (re)subscribe resumed without loss. */
  get recovered() {
    return this.#recovered;
  }

  /** The last seq delivered: persist it with `epoch` to resume later. */
  get lastSeq() {
    return this.#stream.lastSeq;
  }

  get epoch() {
    return this.#stream.epoch;
  }

  /** Who is in the room (see presence.js). */
  get presence() {
    return this.#presence;
  }

  /** Publishes not yet acknowledged. */
  get pending() {
    return this.#pending.size;
  }

  /**
   * Publishes `data` to the room. Resolves with the room's `ack` once the
   * message is stored; held and re-sent (same idempotency key) until then,
   * across reconnects; rejects on an `error` frame for it and when the
   * subscription ends.
   *
   * @param {unknown} data any JSON value
   * @param {{id?: string}} [options] `id`: your idempotency key (default: a random UUID)
   */
  publish(data, { id } = {}) {
    if (this.#status === 'ended') return Promise.reject(new Error('subscription has ended'));
    if (this.#pending.size >= this.#port.maxPending) {
      return Promise.reject(new Error(`more than ${this.#port.maxPending} publishes pending`));
    }
    const ref = this.#port.nextRef();
    const text = JSON.stringify({ type: 'publish', room: this.#room, ref, id: id ?? randomId(), data });
    return new Promise((resolve, reject) => {
      this.#pending.set(ref, { text, resolve, reject });
      // Before `subscribed` the room would refuse it (not_subscribed): it goes out then.
      if (this.#status === 'subscribed' && this.#port.isOpen()) this.#port.send(text);
    });
  }

  /** Leaves the room; pending publishes are rejected, `unsubscribed` fires with reason `client`. */
  unsubscribe() {
    if (this.#status === 'ended') return;
    if (this.#port.isOpen()) this.#port.send(JSON.stringify({ type: 'unsubscribe', room: this.#room }));
    this.#end('client');
  }

  /**
   * Messages after `since` from the room's HTTP history.
   * @param {{since?: number, limit?: number}} [query]
   */
  history(query) {
    return readHistory(this.#port.url, this.#port.token(), this.#room, query);
  }

  /**
   * A page of the room's members over HTTP (see the single-room client's `presenceMembers`).
   * @param {{after?: string, limit?: number}} [query]
   */
  presenceMembers(query) {
    return readMembers(this.#port.url, this.#port.token(), this.#room, query);
  }

  /**
   * A new socket is about to subscribe the room again: the entry for its
   * `subscribe` frame. `serverSide`: the server subscribes the room itself
   * first (the token's `channels`), from its head; that `subscribed` is not
   * the answer to this one.
   */
  #resubscribing(serverSide) {
    this.#status = 'subscribing';
    this.#ws = null;
    this.#skipSubscribed = serverSide ? 1 : 0;
    return { room: this.#room, ...this.#stream.resumePoint() };
  }

  #receive(ws, frame) {
    if (this.#status === 'ended') return;
    switch (frame.type) {
      case 'subscribed':
        if (this.#skipSubscribed > 0) this.#skipSubscribed -= 1;
        else this.#subscribed(ws, frame);
        return;
      case 'message':
        if (this.#status === 'subscribed' && ws === this.#ws) this.#stream.message(ws, frame);
        return;
      case 'ack':
        this.#ack(frame);
        return;
      case 'error':
        this.#error(frame);
        return;
      case 'unsubscribed':
        // `client` answers our own unsubscribe, already ended here.
        if (frame.reason !== 'client') this.#end(frame.reason);
        return;
      default:
        this.#presence.receive(frame);
    }
  }

  #subscribed(ws, frame) {
    this.#status = 'subscribed';
    this.#ws = ws;
    const resync = this.#stream.welcome(frame);
    this.#recovered = frame.recovered;
    this.#presence.connected();
    this.#emit('subscribed', frame);
    if (resync) this.#emit('resync', { room: this.#room, ...resync });
    for (const { text } of this.#pending.values()) this.#port.send(text);
    if (frame.catch_up) void this.#stream.catchUp(ws, frame.catch_up);
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
    if (!entry && this.#status === 'subscribing') this.#end('refused', { code: error.code });
  }

  #end(reason, extra = {}) {
    if (this.#status === 'ended') return;
    this.#status = 'ended';
    this.#ws = null;
    this.#port.remove();
    for (const { reject } of this.#pending.values()) reject(new Error(`unsubscribed: ${reason}`));
    this.#pending.clear();
    this.#emit('unsubscribed', { room: this.#room, reason, ...extra });
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** Adds each of `handlers` (named after one of `names`) as a listener given the event's `detail`. */
function listen(target, names, handlers) {
  for (const [name, handler] of Object.entries(handlers ?? {})) {
    // `{message: undefined}` is what an optional handler left out often looks like.
    if (handler === undefined) continue;
    if (!names.includes(name) || typeof handler !== 'function') {
      throw new TypeError(`unknown handler ${name}: expected one of ${names.join(', ')}`);
    }
    target.addEventListener(name, (event) => handler(/** @type {CustomEvent} */ (event).detail));
  }
}
