// Baseline room for the benchmarks: accept WebSockets (hibernation API, as
// roomcast does), broadcast every publish to every socket, keep the last
// 1000 messages in memory for GET /messages. No auth, no SQLite history, no
// rate limits: it measures what the platform costs, so that
// roomcast / baseline is what roomcast's features cost.
//
// Frames have roomcast's shape ({"type":"message","seq","ts","data",...})
// so the same client code measures both.
import { DurableObject } from "cloudflare:workers";

const HISTORY = 1000;

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/healthz") {
      return Response.json({ status: "ok", version: "baseline" });
    }
    const match = url.pathname.match(/^\/v1\/rooms\/([^/]+)\/(ws|messages)$/);
    if (!match) {
      return new Response("not found", { status: 404 });
    }
    return env.ROOMS.get(env.ROOMS.idFromName(match[1])).fetch(request);
  },
};

export class Room extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.seq = 0;
    this.messages = [];
    this.ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair("ping", "pong"));
  }

  async fetch(request) {
    const url = new URL(request.url);
    if (url.pathname.endsWith("/ws")) {
      const pair = new WebSocketPair();
      this.ctx.acceptWebSocket(pair[1]);
      pair[1].send(JSON.stringify({ type: "welcome", head: this.seq }));
      return new Response(null, { status: 101, webSocket: pair[0] });
    }
    if (request.method === "POST") {
      const body = await request.json();
      const message = this.publish(body.data, "http");
      return Response.json({ id: message.id, seq: message.seq, duplicate: false }, { status: 201 });
    }
    const since = Number(url.searchParams.get("since") ?? 0);
    const limit = Math.min(Number(url.searchParams.get("limit") ?? 100), 1000);
    const after = this.messages.filter((m) => m.seq > since);
    return Response.json({
      room: "baseline",
      head: this.seq,
      messages: after.slice(0, limit),
      truncated: after.length > limit,
    });
  }

  webSocketMessage(ws, text) {
    const frame = JSON.parse(text);
    if (frame.type !== "publish") {
      return;
    }
    const message = this.publish(frame.data, "ws");
    ws.send(JSON.stringify({ type: "ack", id: message.id, seq: message.seq, duplicate: false }));
  }

  webSocketClose(ws, code) {
    ws.close(code === 1005 ? 1000 : code, "closing");
  }

  publish(data, origin) {
    this.seq += 1;
    const message = { id: `m${this.seq}`, seq: this.seq, ts: Date.now(), origin, data };
    this.messages.push(message);
    if (this.messages.length > HISTORY) {
      this.messages.shift();
    }
    const frame = JSON.stringify({ type: "message", ...message });
    for (const socket of this.ctx.getWebSockets()) {
      try {
        socket.send(frame);
      } catch {
        // A closing socket refuses the send; the benchmark counts what arrives.
      }
    }
    return message;
  }
}
