/**
 * One WebSocket to the worker, kept open.
 *
 * The single-room client and the multiplexed connection differ in what the
 * frames mean, not in how the socket is kept, so this is the part they
 * share: connecting with the token as a subprotocol (browsers cannot set
 * headers on a WebSocket), a connect timeout, heartbeat and dead-path
 * detection, token refresh without reconnecting, reconnects with backoff
 * that starts over only once a connection has proved itself, and the close
 * codes after which reconnecting cannot help.
 *
 * The owner builds the URL, reads every frame this module does not handle
 * itself (`pong`, `auth_ok`, `token_expiring`), says when a connection is
 * open (its first frame) and for how long it pages a catch-up, and receives
 * the `state`, `token` and `error` events to emit as its own.
 *
 * @module
 */

import { Backoff } from './backoff.js';
import { refreshDelay, tokenExpiry } from './token.js';

/** @typedef {'connecting'|'open'|'reconnecting'|'closed'} State */

/**
 * @typedef {object} LinkOwner
 * @property {() => URL} url where to connect now (resume parameters included)
 * @property {(ws: WebSocket, frame: {type: string}) => void} frame a frame the link does not handle
 * @property {(type: string, detail: object) => void} emit
 * @property {(reason: string) => void} finished the link is closed for good
 * @property {() => object} [stateDetail] more fields for every `state` event
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

export class Link {
  #options;
  #owner;
  #WebSocket;
  #token;
  #exp;
  #backoff;
  /** @type {WebSocket|null} */
  #ws = null;
  /** @type {State} */
  #state = 'connecting';
  #reconnects = 0;
  #lastHeard = 0;
  /** @type {Promise<void>|null} */
  #refreshing = null;
  /**
   * The connection that has yet to prove itself before the backoff is
   * reset: `aged` once it stayed open `stableAfterMs`, `paging` while any
   * catch-up on it is being paged. Being open proves nothing: a server that
   * welcomes and then fails (a catch-up it cannot serve, a crash right
   * after the join) would otherwise be reconnected to without pause.
   * @type {{ws: WebSocket, aged: boolean, paging: number}|null}
   */
  #trial = null;
  #timers = { connect: null, reconnect: null, watch: null, refresh: null, stable: null };

  /**
   * @param {object} options the client's options (`token`, `WebSocket`, timings, `backoff`, `refreshToken`)
   * @param {LinkOwner} owner
   */
  constructor(options, owner) {
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (!this.#WebSocket) {
      throw new TypeError('no WebSocket implementation: pass options.WebSocket (the ws package on Node < 22)');
    }
    this.#options = { refreshBeforeMs: 60_000, connectTimeoutMs: 10_000, stableAfterMs: 5000, ...options };
    this.#owner = owner;
    this.#token = options.token;
    this.#exp = tokenExpiry(options.token);
    this.#backoff = new Backoff(options.backoff);
  }

  /** Connects for the first time. */
  start() {
    this.#open();
  }

  /** @returns {State} */
  get state() {
    return this.#state;
  }

  get reconnects() {
    return this.#reconnects;
  }

  /** The newest token, for the owner's HTTP requests. */
  get token() {
    return this.#token;
  }

  /** Whether `ws` is the socket in use (frames and timers of an older one are ignored). */
  isCurrent(ws) {
    return ws === this.#ws;
  }

  /**
   * The server accepted `ws` (its first frame): heartbeat, refresh and the
   * trial that decides when the backoff starts over begin.
   *
   * @param {WebSocket} ws
   * @param {{heartbeatMs: number, exp?: number}} opened
   */
  opened(ws, { heartbeatMs, exp }) {
    clearTimeout(this.#timers.connect);
    this.#exp = exp ?? this.#exp;
    this.#trial = { ws, aged: false, paging: 0 };
    this.#timers.stable = setTimeout(() => {
      if (this.#trial?.ws !== ws) return;
      this.#trial.aged = true;
      this.#proved();
    }, this.#options.stableAfterMs);
    this.#setState('open');
    this.#watch(ws, this.#options.heartbeatMs ?? heartbeatMs);
    this.#scheduleRefresh();
  }

  /**
   * A catch-up is being paged on `ws`: the connection proves nothing until
   * it is done. Returns what to call once it is.
   *
   * @param {WebSocket} ws
   * @returns {() => void}
   */
  paging(ws) {
    const trial = this.#trial;
    if (!trial || trial.ws !== ws) return () => {};
    trial.paging += 1;
    return () => {
      if (this.#trial !== trial) return;
      trial.paging -= 1;
      this.#proved();
    };
  }

  /** Sends on the current socket, if any. */
  send(text) {
    try {
      this.#ws?.send(text);
    } catch {
      // The socket is closing; its close event reconnects and the owner re-sends.
    }
  }

  /** Gives up on `ws` without waiting for its close handshake, and reconnects. */
  lost(ws, reason) {
    if (ws !== this.#ws) return;
    this.#detach();
    closeQuietly(ws, 4000, reason);
    this.#reconnectLater(4000, reason);
  }

  /** Closes for good. */
  close() {
    if (this.#state === 'closed') return;
    const ws = this.#ws;
    this.#detach();
    if (ws) closeQuietly(ws, 1000, 'client closed');
    this.#finish('closed by the application');
  }

  /** Once the trial's socket is both aged and paged, failures start over from the shortest backoff. */
  #proved() {
    const trial = this.#trial;
    if (trial && trial.aged && trial.paging === 0) {
      this.#trial = null;
      this.#backoff.reset();
    }
  }

  #open() {
    // Browsers cannot set headers on a WebSocket: the token travels as a subprotocol.
    const ws = new this.#WebSocket(this.#owner.url().toString(), ['roomcast.v1', `bearer.${this.#token}`]);
    this.#ws = ws;
    this.#timers.connect = setTimeout(() => this.lost(ws, 'no welcome in time'), this.#options.connectTimeoutMs);
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
      this.#owner.emit('error', { code: 'bad_frame', message: `not JSON: ${String(text).slice(0, 80)}` });
      return;
    }
    switch (frame.type) {
      case 'auth_ok':
        this.#exp = frame.exp;
        this.#scheduleRefresh();
        this.#owner.emit('token', { exp: frame.exp });
        return;
      case 'token_expiring':
        void this.#refresh();
        return;
      default:
        this.#owner.frame(ws, frame);
    }
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
        if (now - closingSince >= STALLED_CLOSE_MS) this.lost(ws, 'close handshake stalled');
        return;
      }
      if (now - this.#lastHeard > deadAfterMs) {
        this.lost(ws, 'no pong');
        return;
      }
      if (now - lastPing >= intervalMs) {
        lastPing = now;
        this.send('ping');
      }
    }, Math.min(intervalMs, WATCH_TICK_MS));
  }

  #scheduleRefresh() {
    clearTimeout(this.#timers.refresh);
    if (!this.#options.refreshToken || this.#exp === null) return;
    const delay = refreshDelay(this.#exp, Date.now(), this.#options.refreshBeforeMs);
    this.#timers.refresh = setTimeout(() => this.#refresh(), Math.min(delay, MAX_TIMER_MS));
  }

  /** Fetches a fresh token and, when connected, hands it to the server. */
  #refresh() {
    if (!this.#options.refreshToken) return Promise.resolve();
    this.#refreshing ??= (async () => {
      try {
        this.#token = await this.#options.refreshToken();
        this.#exp = tokenExpiry(this.#token) ?? this.#exp;
        if (this.#state === 'open') this.send(JSON.stringify({ type: 'auth', token: this.#token }));
      } catch (e) {
        this.#owner.emit('error', { code: 'refresh_failed', message: String(e?.message ?? e) });
      } finally {
        this.#refreshing = null;
      }
    })();
    return this.#refreshing;
  }

  #tokenExpiresWithin(ms) {
    return this.#exp !== null && this.#exp * 1000 - Date.now() < ms;
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
    this.#owner.finished(reason);
  }

  #setState(state, extra = {}) {
    this.#state = state;
    this.#owner.emit('state', { state, reconnects: this.#reconnects, ...this.#owner.stateDetail?.(), ...extra });
  }
}

/** The WebSocket form of the worker's base URL. */
export function wsBase(url) {
  return url.replace(/^http(s?):/, 'ws$1:');
}

function closeQuietly(ws, code, reason) {
  try {
    ws.close(code, reason.slice(0, 120));
  } catch {
    // Already closing.
  }
}
