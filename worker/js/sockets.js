// What the runtime keeps per socket, read once per wake. The runtime
// decodes an attachment on every read (a structured clone) and builds a new
// array of tags on every `getTags`, and a room asks both of the socket of
// every frame. What a socket's attachment holds is kept here from its first
// read or its last write (all writes come through `save`); its tags, which
// never change, from their first read. A socket the runtime hands over
// after hibernation is a new object and is read afresh.
const attachments = new WeakMap();
const tags = new WeakMap();
const numbers = new WeakMap();
let lastNumber = 0;

// The socket's attachment (a JSON string), or null before any was saved.
export function load(ws) {
  let json = attachments.get(ws);
  if (json === undefined) {
    json = ws.deserializeAttachment() ?? null;
    attachments.set(ws, json);
  }
  return json;
}

export function save(ws, json) {
  ws.serializeAttachment(json);
  attachments.set(ws, json);
}

// Whether `state` accepted the socket with `tag`.
export function hasTag(state, ws, tag) {
  let known = tags.get(ws);
  if (known === undefined) {
    known = state.getTags(ws);
    tags.set(ws, known);
  }
  return known.includes(tag);
}

// A number that names the socket for as long as this object holds it in
// memory, so that Rust can keep what it decoded of the socket by it.
export function number(ws) {
  let n = numbers.get(ws);
  if (n === undefined) {
    n = ++lastNumber;
    numbers.set(ws, n);
  }
  return n;
}
