/**
 * Idempotency keys for publishes.
 *
 * `crypto.randomUUID` exists only in secure contexts (https, localhost);
 * a page served over plain http from another host still needs keys, so the
 * fallback builds the same UUIDv4 from `getRandomValues`.
 *
 * @module
 */

/** A UUIDv4 for idempotency keys, also outside secure contexts where `randomUUID` is missing. */
export function randomId() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  const b = globalThis.crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
