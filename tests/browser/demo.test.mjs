// The demo page in headless Chromium (Debian's), driven by playwright-core,
// against the real worker under `wrangler dev`: join, send, see the message
// come back with a latency, and ride out server-side closes (the worker
// closes idle sockets after 2 s, and the page's pings are lost on the way)
// with every message shown exactly once, in order, and no error logged (a
// failed WebSocket included). The token rides in the link's fragment and never
// reaches a URL or `Referer`. Leaves a screenshot in test-artifacts/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { ARTIFACTS, Worker, token, room } from '../js/worker.mjs';
import { assertTokenNeverSent, launch, recordDeliveries, watch } from './chromium.mjs';

let worker;
let browser;

before(async () => {
  worker = await Worker.start({ IDLE_TIMEOUT_MS: '2000', HEARTBEAT_MS: '1000' });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  worker?.stop();
});

test('the demo page joins, sends, measures latency and survives server-side closes', async () => {
  const name = room('browser.demo');
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  page.setDefaultTimeout(30_000);
  const seen = watch(page);
  await recordDeliveries(page);
  // The page pings as the room advises, and every ping is lost on the way,
  // like on a network that drops them: the server sees an idle socket.
  await page.addInitScript(() => {
    const send = WebSocket.prototype.send;
    WebSocket.prototype.send = function sendAllButPings(data) {
      if (data !== 'ping') send.call(this, data);
    };
  });

  const secret = token({ sub: 'chromium' });
  await page.goto(worker.url(`/?room=${name}#token=${secret}`));
  assert.equal(new URL(page.url()).hash, '', 'the token leaves the address bar');
  assert.equal(new URL(page.url()).searchParams.get('room'), name);
  await page.click('#join-button');
  await page.waitForSelector('#state[data-state="open"]');

  await page.fill('#text', 'hello from chromium');
  await page.press('#text', 'Enter');
  const own = page.locator('#messages tr[data-seq="1"]');
  await own.waitFor();
  assert.equal(await own.locator('.data').textContent(), '{"text":"hello from chromium"}');
  assert.equal(await own.locator('.sender').textContent(), 'chromium');
  assert.equal(await own.locator('.origin').textContent(), 'ws');
  const latency = parseFloat(await own.locator('.latency').textContent());
  assert.ok(latency > 0 && latency < 5000, `latency ${latency} ms`);

  // A stream from HTTP while the server keeps closing the idle page.
  const total = 60;
  const writer = token({ sub: 'writer' });
  for (let i = 1; i <= total; i += 1) {
    await worker.publish(name, writer, { i });
    await new Promise((resolve) => setTimeout(resolve, 80));
  }
  await page.waitForFunction((n) => document.querySelectorAll('#messages tr').length >= n, total + 1, {
    timeout: 60_000,
  });
  const expected = Array.from({ length: total + 1 }, (_, i) => i + 1);
  assert.deepEqual(await page.evaluate(() => window.delivered), expected, 'every message once, in order');
  const rows = await page.$$eval('#messages tr', (trs) => trs.map((r) => Number(r.dataset.seq)));
  assert.deepEqual(rows, expected.toReversed(), 'shown newest first, each once');
  const data = await page.$$eval('#messages tr:not(.own) .data', (tds) => tds.map((td) => JSON.parse(td.textContent).i));
  assert.deepEqual(data, Array.from({ length: total }, (_, i) => total - i), 'each seq shows its own message');
  const reconnects = Number(await page.textContent('#reconnects'));
  assert.ok(reconnects >= 1, `the server closed the page at least once (${reconnects})`);
  await page.waitForSelector('#state[data-state="open"]');
  assert.equal(await page.textContent('#recovered'), 'true');
  assert.equal(await page.textContent('#last-seq'), String(total + 1));

  mkdirSync(path.join(ARTIFACTS, 'browser'), { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, 'browser', 'demo.png'), fullPage: true });
  assert.deepEqual(seen.errors, [], 'no page errors');
  await assertTokenNeverSent(assert, seen, secret);
});
