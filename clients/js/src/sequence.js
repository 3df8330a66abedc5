/**
 * Gapless, duplicate-free delivery on top of the room's sequence numbers.
 *
 * A room numbers its messages 1, 2, 3, ... within an epoch. The client keeps
 * the last sequence number it handed to the application and resumes with
 * `?since=<it>&epoch=<epoch>`; the room then replays what was missed. This
 * module is that bookkeeping, kept free of sockets so it is tested alone.
 *
 * @module
 */

/**
 * @typedef {object} WelcomeFrame
 * @property {string} epoch
 * @property {number} head
 * @property {boolean} recovered
 */

/**
 * @typedef {object} Resync
 * @property {string|null} previousEpoch the epoch the client had
 * @property {number|null} since the last seq the application saw
 * @property {string} epoch the room's epoch now
 * @property {number} head the room's newest seq; delivery continues after it
 */

export class Sequence {
  /**
   * @param {number|null} [since] last seq the application already has
   * @param {string|null} [epoch] the epoch `since` belongs to
   */
  constructor(since = null, epoch = null) {
    /** @type {number|null} */
    this.lastSeq = since;
    /** @type {string|null} */
    this.epoch = epoch;
  }

  /** Query parameters for the next connect. */
  resumeQuery() {
    if (this.lastSeq === null || this.epoch === null) return {};
    return { since: String(this.lastSeq), epoch: this.epoch };
  }

  /**
   * Takes the room's `welcome`. Returns a {@link Resync} when the client had
   * a position the room could not resume from (history trimmed, or a new
   * epoch), so the application knows it missed messages; `null` otherwise.
   *
   * @param {WelcomeFrame} welcome
   * @returns {Resync|null}
   */
  welcome(welcome) {
    const previous = { previousEpoch: this.epoch, since: this.lastSeq };
    this.epoch = welcome.epoch;
    if (welcome.recovered) {
      if (this.lastSeq === null) this.lastSeq = welcome.head;
      return null;
    }
    this.lastSeq = welcome.head;
    if (previous.since === null) return null;
    return { ...previous, epoch: welcome.epoch, head: welcome.head };
  }

  /**
   * Classifies a message's seq: `deliver` (the next one, now recorded),
   * `duplicate` (already delivered), or `gap` (something is missing: the
   * caller reconnects to have it replayed).
   *
   * @param {number} seq
   * @returns {'deliver'|'duplicate'|'gap'}
   */
  accept(seq) {
    if (this.lastSeq !== null && seq <= this.lastSeq) return 'duplicate';
    if (this.lastSeq !== null && seq !== this.lastSeq + 1) return 'gap';
    this.lastSeq = seq;
    return 'deliver';
  }
}
