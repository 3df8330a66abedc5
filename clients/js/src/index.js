/**
 * roomcast's JavaScript client: see README.md.
 *
 * @module
 */
export { RoomcastClient } from './client.js';
export { RoomcastConnection } from './connection.js';
export { Subscription } from './subscription.js';
export { Backoff } from './backoff.js';
export { randomId } from './id.js';
export { Presence } from './presence.js';
export { Sequence } from './sequence.js';
export { refreshDelay, tokenExpiry } from './token.js';
