// The durable JS room: what a careful JavaScript developer would write to
// get roomcast's core guarantees with nothing else. The token is checked
// before the room is woken; every publish is one SQLite INSERT (stored
// before anyone hears of it: the output gate holds the frames until the
// write commits), seq comes from storage, identity rides in the socket
// attachment, sockets hibernate and `ping` is answered by the runtime. No
// rate limits, idempotency, resume, heartbeat sweeps or Kafka outbox: the
// benchmark's rung between the bare room and roomcast.
import { DurableObject } from "cloudflare:workers";
import { admit } from "../js/identity.js";
import { Messages } from "../js/messages.js";

export default {
  async fetch(request, env) {
    const admitted = await admit(request, env);
    if (admitted.refused) {
      return admitted.refused;
    }
    return env.ROOMS.get(env.ROOMS.idFromName(admitted.room)).fetch(admitted.request);
  },
};

export class Room extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.messages = new Messages(ctx.storage.sql, ctx.id.name);
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair("ping", "pong"));
  }

  async fetch(request) {
    const url = new URL(request.url);
    if (!url.pathname.endsWith("/ws")) {
      return request.method === "GET" ? this.messages.page(url) : new Response(null, { status: 405 });
    }
    const pair = new WebSocketPair();
    this.ctx.acceptWebSocket(pair[1]);
    pair[1].serializeAttachment({
      sub: request.headers.get("x-sub"),
      publish: request.headers.get("x-can-publish") === "1",
    });
    pair[1].send(this.messages.welcome());
    return new Response(null, { status: 101, webSocket: pair[0] });
  }

  webSocketMessage(ws, text) {
    const { broadcast, reply } = this.messages.publish(text, ws.deserializeAttachment());
    if (broadcast) {
      for (const socket of this.ctx.getWebSockets()) {
        try {
          socket.send(broadcast);
        } catch {
          // A closing socket refuses the send; it is gone from the next turn's list.
        }
      }
    }
    ws.send(reply);
  }

  webSocketClose(ws, code) {
    ws.close(code === 1005 ? 1000 : code, "closing");
  }
}
