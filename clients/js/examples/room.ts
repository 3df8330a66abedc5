// One room, from TypeScript: the single-room client and its presence view.
// `tsc -p clients/js` checks it against the package's declarations.
import { RoomcastClient, type Ack } from '@roomcast/client';

declare function fetchToken(): Promise<string>;

const client = new RoomcastClient({
  url: 'https://rooms.example.com',
  room: 'chat.lobby',
  token: await fetchToken(),
  refreshToken: fetchToken,
  backoff: { initialMs: 250, maxMs: 30_000 },
});

client.addEventListener('message', (e) => console.info(e.detail.seq, e.detail.sender, e.detail.data));
client.addEventListener('state', (e) => console.info(e.detail.state, e.detail.recovered));
client.addEventListener('resync', async (e) => {
  const page = await client.history({ since: e.detail.since ?? 0 });
  console.info(`refilled ${page.messages.length} of ${page.head}`);
});
client.presence.addEventListener('update', (e) => console.info(e.detail.sub, e.detail.metas.length, 'devices'));
client.presence.addEventListener('occupancy', (e) => console.info(e.detail.connections, 'sockets'));

const ack: Ack = await client.publish({ text: 'hello' });
console.info(ack.seq, ack.duplicate, client.lastSeq, client.epoch, client.pending);

const members = await client.presenceMembers({ limit: 10 });
console.info(members.members.map((m) => m.sub), members.next);
client.close();
