/**
 * Reading a JWT's `exp` without verifying it.
 *
 * The client only needs to know when to ask for a fresh token; the server
 * verifies. Decoding stays tolerant: a token it cannot read simply gets no
 * scheduled refresh (the server's `token_expiring` frame still triggers one).
 *
 * @module
 */

/**
 * @param {string} token a compact JWT
 * @returns {number|null} its `exp` in seconds since the epoch
 */
export function tokenExpiry(token) {
  const payload = token.split('.')[1];
  if (!payload) return null;
  try {
    const base64 = payload.replace(/-/g, '+').replace(/_/g, '/');
    const json = JSON.parse(atob(base64 + '='.repeat((4 - (base64.length % 4)) % 4)));
    return Number.isFinite(json.exp) ? json.exp : null;
  } catch {
    return null;
  }
}

/**
 * How long to wait before refreshing a token that expires at `expSecs`:
 * `refreshBeforeMs` ahead of expiry, but a token shorter-lived than that
 * margin is refreshed half-way, so a fresh short token does not refresh in
 * a loop.
 *
 * @param {number} expSecs
 * @param {number} nowMs
 * @param {number} refreshBeforeMs
 * @returns {number} milliseconds, never negative
 */
export function refreshDelay(expSecs, nowMs, refreshBeforeMs) {
  const remainingMs = expSecs * 1000 - nowMs;
  return Math.max(remainingMs - refreshBeforeMs, remainingMs / 2, 0);
}
