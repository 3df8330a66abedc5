/**
 * One room's messages as the application sees them: in seq order, each
 * once, across reconnects.
 *
 * The room's `welcome` (or, on a multiplexed connection, its `subscribed`)
 * sets the position; `message` frames then move it. A duplicate is dropped,
 * a gap (which a room never produces on one connection) makes the owner
 * reconnect and resume. When the room had more to replay than one turn may
 * carry it sends `catch_up` instead: the history is paged over HTTP up to
 * `until`, and the live messages that arrive meanwhile are held back and
 * delivered after it. The single-room client and every subscription of a
 * multiplexed connection keep one each.
 *
 * @module
 */

import { Sequence } from './sequence.js';

/**
 * @typedef {object} StreamHooks
 * @property {(message: object) => void} deliver the next message, in order
 * @property {(ws: WebSocket) => boolean} isCurrent whether `ws` still feeds this stream
 * @property {(ws: WebSocket, reason: string) => void} lost give up on `ws` and resume elsewhere
 * @property {(ws: WebSocket) => () => void} paging a catch-up started on `ws`; returns its end
 * @property {(query: {since: number, limit: number}) => Promise<{messages: object[]}>} history
 */

export class RoomStream {
  #sequence;
  #hooks;
  /**
   * While a catch-up is paged, the live messages that arrive meanwhile,
   * held back in order; `null` otherwise.
   * @type {object[]|null}
   */
  #held = null;

  /**
   * @param {number|null} since the last seq the application has
   * @param {string|null} epoch the epoch `since` belongs to
   * @param {StreamHooks} hooks
   */
  constructor(since, epoch, hooks) {
    this.#sequence = new Sequence(since, epoch);
    this.#hooks = hooks;
  }

  /** The last seq delivered. */
  get lastSeq() {
    return this.#sequence.lastSeq;
  }

  get epoch() {
    return this.#sequence.epoch;
  }

  /** Query parameters to resume with (the single-room route). */
  resumeQuery() {
    return this.#sequence.resumeQuery();
  }

  /** `{since, epoch}` to resume with, or `{}` when there is no position yet (a `subscribe` entry). */
  resumePoint() {
    const { lastSeq: since, epoch } = this.#sequence;
    return since === null || epoch === null ? {} : { since, epoch };
  }

  /**
   * Takes the room's `welcome`/`subscribed` frame; returns the
   * {@link import('./sequence.js').Resync} when messages were missed.
   * A catch-up it asks for is started by {@link catchUp}.
   */
  welcome(frame) {
    this.#held = null;
    return this.#sequence.welcome(frame);
  }

  /** A live `message` frame from `ws`. */
  message(ws, message) {
    if (this.#held) this.#held.push(message);
    else this.#deliver(ws, message);
  }

  /**
   * Pages the history up to `until`, delivering it in order, then the live
   * messages that came meanwhile.
   *
   * @param {WebSocket} ws
   * @param {{since: number, until: number}} range
   */
  async catchUp(ws, { since, until }) {
    const held = [];
    this.#held = held;
    const done = this.#hooks.paging(ws);
    try {
      let from = since;
      while (from < until) {
        const page = await this.#hooks.history({ since: from, limit: 1000 });
        if (!this.#hooks.isCurrent(ws)) return;
        const last = page.messages.at(-1);
        if (!last) throw new Error(`the history ends before seq ${until}`);
        for (const message of page.messages) {
          if (message.seq <= until) this.#deliver(ws, message);
        }
        from = last.seq;
      }
    } catch (e) {
      this.#hooks.lost(ws, `catching up: ${e.message}`);
      return;
    }
    if (!this.#hooks.isCurrent(ws) || this.#held !== held) return;
    this.#held = null;
    for (const message of held) this.#deliver(ws, message);
    done();
  }

  #deliver(ws, message) {
    switch (this.#sequence.accept(message.seq)) {
      case 'deliver':
        this.#hooks.deliver(message);
        return;
      case 'gap':
        // The room never skips a seq on one connection; a resume fills it in.
        this.#hooks.lost(ws, `gap before seq ${message.seq}`);
        return;
      default:
    }
  }
}
