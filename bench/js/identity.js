// Who is calling, for the durable JS room and the partyserver room: the
// HS256 JWT roomcast's clients already carry (`Authorization: Bearer` or
// `?token=`), checked with WebCrypto the way a careful JavaScript developer
// would (signature, expiry, the room patterns of its rights). Both rooms
// share it so that they pay for the same admission checks roomcast's router
// makes; the bare baseline checks nothing.

const encoder = new TextEncoder();
// One imported key per isolate: importKey is far dearer than verify.
let cached = { secret: null, key: null };

function hmacKey(secret) {
  if (cached.secret !== secret) {
    const raw = encoder.encode(secret);
    const key = crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
    cached = { secret, key };
  }
  return cached.key;
}

function base64url(text) {
  return Uint8Array.from(atob(text.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
}

// roomcast's patterns: `*`, a prefix ending in `*`, or an exact name.
function covers(patterns, room) {
  return (patterns ?? []).some((p) => (p.endsWith("*") ? room.startsWith(p.slice(0, -1)) : p === room));
}

// The caller's `{ sub, subscribe, publish }` rights on `room`, or null when
// the token is missing, forged, malformed or expired.
async function identify(request, secret, room) {
  const url = new URL(request.url);
  const bearer = request.headers.get("authorization")?.match(/^Bearer (.+)$/)?.[1];
  const token = bearer ?? url.searchParams.get("token");
  const parts = token?.split(".");
  if (parts?.length !== 3) {
    return null;
  }
  try {
    const signed = encoder.encode(`${parts[0]}.${parts[1]}`);
    const valid = await crypto.subtle.verify("HMAC", await hmacKey(secret), base64url(parts[2]), signed);
    const header = JSON.parse(new TextDecoder().decode(base64url(parts[0])));
    const claims = JSON.parse(new TextDecoder().decode(base64url(parts[1])));
    if (!valid || header.alg !== "HS256" || typeof claims.sub !== "string" || !(claims.exp * 1000 > Date.now())) {
      return null;
    }
    const bridge = claims.role === "bridge";
    return {
      sub: claims.sub,
      subscribe: bridge || covers(claims.rooms, room),
      publish: bridge || covers(claims.publish, room),
    };
  } catch {
    return null;
  }
}

// The worker's half of both rooms: room name and token checked before any
// room is woken (as roomcast's router does), the identity handed to the room
// in headers only the worker sets. `null` when the path is not a room's.
export async function admit(request, env) {
  const url = new URL(request.url);
  const match = url.pathname.match(/^\/v1\/rooms\/([A-Za-z0-9][A-Za-z0-9._:-]{0,127})\/(ws|messages)$/);
  if (!match) {
    return { refused: url.pathname === "/healthz" ? Response.json({ status: "ok" }) : error(404, "not_found") };
  }
  const [, room, operation] = match;
  if (operation === "ws" && request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
    return { refused: error(426, "upgrade_required") };
  }
  const who = await identify(request, env.JWT_SECRET, room);
  if (!who) {
    return { refused: error(401, "unauthorized") };
  }
  if (!who.subscribe) {
    return { refused: error(403, "forbidden") };
  }
  const forwarded = new Request(request);
  forwarded.headers.set("x-sub", who.sub);
  forwarded.headers.set("x-can-publish", who.publish ? "1" : "0");
  return { room, request: forwarded };
}

function error(status, code) {
  return Response.json({ error: { code, message: code } }, { status });
}
