// The partyserver room: the same room as bench/durable (token checked
// before the room is woken, one SQLite INSERT per publish, identity in the
// socket attachment, hibernation, `ping` answered by the runtime, the same
// frames), written the way partyserver's README says: a `Server` with
// `hibernate: true`, `onStart`/`onConnect`/`onMessage`/`onRequest`,
// `connection.setState` and `this.broadcast`, reached with
// `getServerByName`. It measures what a user gets from the framework they
// would pick instead of roomcast.
import { Server, getServerByName } from "partyserver";
import { admit } from "../js/identity.js";
import { Messages } from "../js/messages.js";

export default {
  async fetch(request, env) {
    const admitted = await admit(request, env);
    if (admitted.refused) {
      return admitted.refused;
    }
    const room = await getServerByName(env.ROOMS, admitted.room);
    return room.fetch(admitted.request);
  },
};

export class Room extends Server {
  static options = { hibernate: true };

  onStart() {
    this.messages = new Messages(this.ctx.storage.sql, this.name);
    this.ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair("ping", "pong"));
  }

  onConnect(connection, { request }) {
    connection.setState({
      sub: request.headers.get("x-sub"),
      publish: request.headers.get("x-can-publish") === "1",
    });
    connection.send(this.messages.welcome());
  }

  onMessage(connection, text) {
    const { broadcast, reply } = this.messages.publish(text, connection.state);
    if (broadcast) {
      this.broadcast(broadcast);
    }
    connection.send(reply);
  }

  onRequest(request) {
    const url = new URL(request.url);
    return request.method === "GET" ? this.messages.page(url) : new Response(null, { status: 405 });
  }
}
