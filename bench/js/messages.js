// A room's messages as a careful JavaScript developer would keep them in
// the Durable Object's SQLite: one INSERT per publish, seq kept in memory
// and initialised from MAX(seq) when the object wakes, the newest 1000
// readable (a DELETE every 100th publish keeps the table bounded), and the
// frames roomcast sends. The durable JS room and the partyserver room both
// use it, so they differ only in how they hold and reach their sockets.

const HISTORY = 1000;
const TRIM_EVERY = 100;
const HEARTBEAT_MS = 30000;

export class Messages {
  constructor(sql, room) {
    this.sql = sql;
    this.room = room;
    sql.exec(
      "CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, ts INTEGER NOT NULL, " +
        "sender TEXT NOT NULL, origin TEXT NOT NULL, data TEXT NOT NULL)",
    );
    this.head = sql.exec("SELECT MAX(seq) AS head FROM messages").one().head ?? 0;
  }

  welcome() {
    return JSON.stringify({ type: "welcome", room: this.room, head: this.head, heartbeat_ms: HEARTBEAT_MS });
  }

  // A client frame from `who` (`{ sub, publish }`, the socket's attachment):
  // the frame for every socket when something was stored, and the reply
  // for the sender (an ack, or an error frame).
  publish(text, who) {
    let frame;
    try {
      frame = typeof text === "string" ? JSON.parse(text) : null;
    } catch {
      frame = null;
    }
    if (frame?.type !== "publish" || frame.data === undefined) {
      return { reply: failure("bad_format", frame?.ref) };
    }
    if (!who.publish) {
      return { reply: failure("forbidden", frame.ref) };
    }
    const message = this.append(frame.data, who.sub, "ws");
    return {
      broadcast: JSON.stringify({ type: "message", ...message }),
      reply: JSON.stringify({ type: "ack", ref: frame.ref, id: message.id, seq: message.seq, duplicate: false }),
    };
  }

  append(data, sender, origin) {
    const seq = this.head + 1;
    const message = { room: this.room, id: crypto.randomUUID(), seq, ts: Date.now(), sender, origin, data };
    this.sql.exec(
      "INSERT INTO messages (seq, id, ts, sender, origin, data) VALUES (?, ?, ?, ?, ?, ?)",
      seq,
      message.id,
      message.ts,
      sender,
      origin,
      JSON.stringify(data),
    );
    this.head = seq;
    if (seq % TRIM_EVERY === 0) {
      this.sql.exec("DELETE FROM messages WHERE seq <= ?", seq - HISTORY);
    }
    return message;
  }

  // `GET .../messages?since=&limit=`: roomcast's history page.
  page(url) {
    const since = Number(url.searchParams.get("since") ?? 0);
    const limit = Math.min(Math.max(Number(url.searchParams.get("limit") ?? 100), 1), HISTORY);
    if (!Number.isSafeInteger(since) || since < 0 || !Number.isSafeInteger(limit)) {
      return Response.json({ error: { code: "bad_request", message: "bad since or limit" } }, { status: 400 });
    }
    // Rows past the count limit wait for the next trim but are never shown.
    const oldest = Math.max(this.head - HISTORY, 0) + 1;
    const rows = this.sql
      .exec(
        "SELECT seq, id, ts, sender, origin, data FROM messages WHERE seq > ? ORDER BY seq LIMIT ?",
        Math.max(since, oldest - 1),
        limit,
      )
      .toArray();
    const messages = rows.map((row) => ({ room: this.room, ...row, data: JSON.parse(row.data) }));
    const last = messages.at(-1)?.seq ?? this.head;
    return Response.json({
      room: this.room,
      head: this.head,
      oldest: this.head === 0 ? null : oldest,
      messages,
      truncated: last < this.head,
    });
  }
}

function failure(code, ref) {
  return JSON.stringify({ type: "error", code, message: code, ref });
}
