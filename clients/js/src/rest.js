/**
 * A room's HTTP resources (`/v1/rooms/{room}/…`), read with the current
 * token: the history a catch-up pages and `resync` fills in from, and the
 * member list. Shared by the single-room client and the subscriptions of a
 * multiplexed connection, which read them the same way.
 *
 * @module
 */

/**
 * GETs `/v1/rooms/{room}/{resource}?{query}` with `Authorization: Bearer`.
 *
 * @param {string} base the worker's base URL (`http(s)://` or `ws(s)://`)
 * @param {string} token
 * @param {string} room
 * @param {string} resource `messages` or `presence`
 * @param {Record<string, string|number>} query
 * @param {string} what names the call in the error thrown on a refusal
 */
async function getRoomResource(base, token, room, resource, query, what) {
  const url = new URL(`/v1/rooms/${encodeURIComponent(room)}/${resource}`, httpBase(base));
  for (const [name, value] of Object.entries(query)) url.searchParams.set(name, String(value));
  const response = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
  const body = await response.json();
  if (!response.ok) throw new Error(`${what}: ${response.status} ${body?.error?.code ?? ''}`);
  return body;
}

/** `history({since, limit})` of a room. */
export function readHistory(base, token, room, { since = 0, limit = 100 } = {}) {
  return getRoomResource(base, token, room, 'messages', { since, limit }, 'history');
}

/** `presenceMembers({after, limit})` of a room. */
export function readMembers(base, token, room, { after, limit = 100 } = {}) {
  return getRoomResource(base, token, room, 'presence', { ...(after === undefined ? {} : { after }), limit }, 'presence');
}

function httpBase(url) {
  return url.replace(/^ws(s?):/, 'http$1:');
}
