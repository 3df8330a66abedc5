// A worker restart (a deploy, a crash) while a client publishes and
// receives: every publish is acknowledged, every message arrives once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { RoomcastClient } from '../src/index.js';
import { Worker, token, room, nextEvent } from '../../../tests/js/worker.mjs';

test('publishes and messages survive a worker restart', async (t) => {
  let worker = await Worker.start({ RATE_PER_SEC: '1000', RATE_BURST: '1000' });
  t.after(() => worker.stop());
  const c = new RoomcastClient({
    url: worker.url(),
    room: room('js.restart'),
    token: token(),
    WebSocket,
    backoff: { initialMs: 100, maxMs: 1000 },
  });
  t.after(() => c.close());
  const messages = [];
  c.addEventListener('message', (e) => messages.push(e.detail));
  await nextEvent(c, 'welcome');

  const total = 60;
  const acks = [];
  for (let i = 0; i < total; i += 1) {
    acks.push(c.publish({ i }));
    if (i === 20) {
      const reconnected = nextEvent(c, 'welcome', 120_000);
      worker = await worker.restart();
      const welcome = await reconnected;
      assert.equal(welcome.recovered, true, 'the room resumed the client after the restart');
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const receipts = await Promise.all(acks);
  if (messages.length < total) {
    await nextEvent(c, 'message', 20_000, () => messages.length >= total);
  }
  assert.ok(c.reconnects >= 1);
  assert.deepEqual(messages.map((m) => m.data.i), Array.from({ length: total }, (_, i) => i), 'once each, in order');
  assert.deepEqual(messages.map((m) => m.seq), Array.from({ length: total }, (_, i) => i + 1), 'no gap');
  assert.deepEqual(new Set(receipts.map((r) => r.id)), new Set(messages.map((m) => m.id)));
});
