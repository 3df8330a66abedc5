// The worker's sends, made from JavaScript. A call from Wasm into the
// runtime costs several times what the send itself does, so the worker
// hands over a whole broadcast (and the publisher's ack), or a whole
// replay, in one call rather than one per socket and frame.
//
// A room's own object and its shards send a room's messages to the sockets
// of a tag (all their clients); a hub, whose sockets are each in their own
// rooms, to a list of them.
//
// Several frames travel as one string, separated by U+001E: JSON text never
// holds a raw control character, so no frame can contain the separator.

const SEPARATOR = "\u001e";

// Sends each frame of `frames`, in order, to every socket of `state`
// tagged `tag`, then `ackFrames` to `ack` (when given): a publisher hears
// of its message before its ack. Returns how many sends the sockets took;
// a closing socket refuses them, and its client resumes from history.
export function broadcast(state, tag, frames, ack, ackFrames) {
  const delivered = broadcastTo(state.getWebSockets(tag), frames);
  if (ack) {
    try {
      sendEach(ack, ackFrames);
    } catch {
      // The publisher's socket is closing: it resumes and finds its
      // message stored.
    }
  }
  return delivered;
}

// Sends each frame of `frames`, in order, to every socket of `sockets`;
// returns how many sends the sockets took.
export function broadcastTo(sockets, frames) {
  let delivered = 0;
  for (const frame of frames.split(SEPARATOR)) {
    for (const ws of sockets) {
      try {
        ws.send(frame);
        delivered++;
      } catch {
        // Closing: the client resumes from history.
      }
    }
  }
  return delivered;
}

// Sends each frame of `frames` to `ws`, in order; throws when the socket
// refuses one.
export function sendEach(ws, frames) {
  for (const frame of frames.split(SEPARATOR)) {
    ws.send(frame);
  }
}
