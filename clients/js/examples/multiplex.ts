// Several rooms on one connection, from TypeScript: a chat sidebar that
// follows every room the user is in, keeps each room's position across
// page loads, and shows who is online in each. `tsc -p clients/js` checks
// it against the package's declarations.
import { RoomcastConnection, type Ack, type Message, type Position, type Subscription } from '@roomcast/client';

interface ChatLine {
  text: string;
}

declare function fetchToken(): Promise<string>;
declare function render(room: string, line: Message<ChatLine>): void;
declare function showOnline(room: string, subs: string[]): void;

const connection = new RoomcastConnection({
  url: 'https://rooms.example.com',
  token: await fetchToken(),
  refreshToken: fetchToken, // one refresh covers every room
});

connection.addEventListener('state', (e) => console.info(`connection ${e.detail.state}, ${e.detail.reconnects} reconnects`));
connection.addEventListener('connected', (e) => console.info(`up to ${e.detail.max_rooms} rooms on ${e.detail.conn_id}`));
// Rooms the token's `channels` claim subscribes without asking.
connection.addEventListener('subscription', (e) => follow(e.detail));

/** Where each room was left, so a reload resumes without a gap. */
function saved(room: string): Position {
  const text = localStorage.getItem(`roomcast:${room}`);
  return text ? (JSON.parse(text) as Position) : {};
}

function follow(subscription: Subscription): Subscription {
  const { room } = subscription;
  return subscription.on({
    message: (message) => {
      render(room, message as Message<ChatLine>);
      localStorage.setItem(`roomcast:${room}`, JSON.stringify({ since: subscription.lastSeq, epoch: subscription.epoch }));
    },
    resync: ({ since, head }) => console.warn(`${room}: messages after ${since ?? 0} up to ${head} were missed`),
    error: ({ code, message }) => console.warn(`${room}: ${code} ${message}`),
    unsubscribed: ({ reason, code }) => console.info(`${room} ended: ${reason}${code ? ` (${code})` : ''}`),
    presence: {
      state: ({ members }) => showOnline(room, members.map((m) => m.sub)),
      join: () => showOnline(room, subscription.presence.members().map((m) => m.sub)),
      leave: () => showOnline(room, subscription.presence.members().map((m) => m.sub)),
    },
  });
}

const rooms = ['chat.lobby', 'chat.dev', 'chat.random'].map((room) => follow(connection.subscribe(room, {}, saved(room))));

const lobby = rooms[0];
const ack: Ack = await lobby.publish({ text: 'hello' } satisfies ChatLine, { id: crypto.randomUUID() });
console.info(`stored as seq ${ack.seq} in ${ack.room}`);

const { messages } = await lobby.history({ since: 0, limit: 50 });
console.info(`${messages.length} older messages`);

rooms[2].unsubscribe();
console.info(`still in ${connection.rooms.join(', ')}`);
