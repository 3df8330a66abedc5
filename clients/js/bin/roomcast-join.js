#!/usr/bin/env node
/**
 * Joins a room from a terminal: prints every message as a JSON line on
 * stdout, publishes every stdin line (JSON as is, anything else as
 * `{"text": line}`), reports connection state on stderr.
 *
 *   ROOMCAST_TOKEN=... roomcast-join http://127.0.0.1:8787 chat.lobby
 *
 * @module
 */
import { createInterface } from 'node:readline';
import { RoomcastClient } from '../src/index.js';

const [url, room] = process.argv.slice(2);
const token = process.env.ROOMCAST_TOKEN;
if (!url || !room || !token) {
  console.error('usage: ROOMCAST_TOKEN=<jwt> roomcast-join <worker url> <room>');
  process.exit(2);
}
// Node 22 has a global WebSocket; older ones need the ws package.
const WebSocket = globalThis.WebSocket ?? (await import('ws')).default;
const client = new RoomcastClient({ url, room, token, WebSocket });

client.addEventListener('message', (e) => console.log(JSON.stringify(e.detail)));
client.addEventListener('error', (e) => console.error(`error ${e.detail.code}: ${e.detail.message}`));
client.addEventListener('resync', (e) => console.error(`resync: missed messages after seq ${e.detail.since}`));
client.addEventListener('state', (e) => {
  const { state, reconnects, recovered, code, reason } = e.detail;
  console.error(`[${state}] reconnects=${reconnects} recovered=${recovered}${code ? ` close=${code} ${reason ?? ''}` : ''}`);
  if (state === 'closed') process.exit(code ? 1 : 0);
});

const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  if (!line.trim()) return;
  let data;
  try {
    data = JSON.parse(line);
  } catch {
    data = { text: line };
  }
  client.publish(data).catch((e) => console.error(`publish failed: ${e.message}`));
});
lines.on('close', () => {
  const drain = () => (client.pending === 0 ? client.close() : setTimeout(drain, 50));
  drain();
});
process.on('SIGINT', () => client.close());
