/**
 * Reconnect delays: exponential backoff with full jitter.
 *
 * Full jitter (a uniformly random delay between zero and the exponential cap)
 * spreads a crowd of clients that lost the same server over the whole window,
 * instead of sending them back in synchronized waves.
 *
 * @module
 */

/**
 * @typedef {object} BackoffOptions
 * @property {number} [initialMs=250] cap of the first delay
 * @property {number} [maxMs=30000] the cap never grows past this
 * @property {() => number} [random=Math.random] a source in [0, 1), for tests
 */

export class Backoff {
  /** @param {BackoffOptions} [options] */
  constructor({ initialMs = 250, maxMs = 30_000, random = Math.random } = {}) {
    if (!(initialMs > 0) || !(maxMs >= initialMs)) {
      throw new RangeError('backoff needs 0 < initialMs <= maxMs');
    }
    this.initialMs = initialMs;
    this.maxMs = maxMs;
    this.random = random;
    this.attempt = 0;
  }

  /** The cap of the next delay, before jitter. */
  cap() {
    return Math.min(this.maxMs, this.initialMs * 2 ** this.attempt);
  }

  /** The next delay in ms; each call doubles the cap up to `maxMs`. */
  next() {
    const delay = Math.floor(this.random() * this.cap());
    if (this.cap() < this.maxMs) this.attempt += 1;
    return delay;
  }

  /** After a successful connect the next failure starts small again. */
  reset() {
    this.attempt = 0;
  }
}
