// The demo page served from another origin than the worker (a static server
// on a port of its own, the setup of the client README), in headless
// Chromium against the real worker under `wrangler dev` with that origin in
// ALLOWED_ORIGINS. The page leaves a room, misses more messages than one
// socket turn replays, and joins again: the room answers `catch_up`, and the
// client pages the history over cross-origin `fetch` (CORS preflight
// included), delivering every message once, in order, before the live one.
// When that paging keeps failing, the page backs off instead of
// reconnecting in a hot loop.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Worker, token, room } from '../js/worker.mjs';
import { assertTokenNeverSent, launch, recordDeliveries, servePublic, waitInPage, watch } from './chromium.mjs';

/** More than the 1000 messages a socket replays in one turn. */
const MISSED = 1200;
let worker;
let site;
let browser;

before(async () => {
  site = await servePublic();
  worker = await Worker.start({
    ALLOWED_ORIGINS: site.origin,
    HISTORY_LIMIT: '2000',
    RATE_PER_SEC: '1000',
    RATE_BURST: '1000',
    ROOM_RATE_PER_SEC: '100000',
  });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  worker?.stop();
  await site?.close();
});

/** The demo page from the static origin, joined to `name` on the worker, then left. */
async function joinedAndLeft(name, secret) {
  const page = await browser.newPage();
  page.setDefaultTimeout(30_000);
  const seen = watch(page);
  await recordDeliveries(page);
  await page.goto(`${site.origin}/?room=${name}&server=${encodeURIComponent(worker.url())}#token=${secret}`);
  await page.click('#join-button');
  await page.waitForSelector('#state[data-state="open"]');
  await page.click('#leave-button');
  await page.waitForSelector('#state[data-state="idle"]');
  return { page, seen };
}

/** Publishes `count` messages `{n}` over HTTP, in batches from subjects of their own (each has a burst of 1000). */
async function publishMissed(name, count) {
  for (let start = 0; start < count; start += 400) {
    const messages = Array.from({ length: Math.min(400, count - start) }, (_, i) => ({ data: { n: start + i + 1 } }));
    await worker.publishBatch(name, token({ sub: `bulk-${start}` }), messages);
  }
}

test('a page on another origin pages its catch_up over HTTP and delivers every message in order', async (t) => {
  const name = room('browser.cors');
  const secret = token({ sub: 'chromium' });
  const { page, seen } = await joinedAndLeft(name, secret);
  t.after(() => page.close());
  await publishMissed(name, MISSED);

  await page.click('#join-button');
  await page.waitForSelector('#state[data-state="open"]');
  const delivered = (n) => window.delivered.length >= n;
  // A catch-up that goes wrong (a gap, a message out of order) shows as a
  // reconnect: fail on it by name rather than on the wait's deadline.
  const deliveredOrReconnecting = (n) =>
    window.delivered.length >= n || document.querySelector('#state')?.dataset.state === 'reconnecting';
  await waitInPage(page, deliveredOrReconnecting, MISSED, 60_000);
  assert.notEqual(
    await page.getAttribute('#state', 'data-state'),
    'reconnecting',
    'the catch-up delivered in order without a reconnect',
  );
  await worker.publish(name, token({ sub: 'writer' }), { live: true });
  await waitInPage(page, delivered, MISSED + 1, 30_000);

  assert.deepEqual(
    await page.evaluate(() => window.delivered),
    Array.from({ length: MISSED + 1 }, (_, i) => i + 1),
    'every message once, in order, the live one last',
  );
  assert.equal(await page.textContent('#reconnects'), '0', 'the catch-up never failed');
  assert.equal(await page.textContent('#recovered'), 'true');

  const pages = seen.requests.filter((r) => r.method() === 'GET' && new URL(r.url()).pathname.endsWith('/messages'));
  assert.ok(pages.length >= 2, `paged in at least two requests (${pages.length})`);
  for (const request of pages) {
    assert.equal((await request.allHeaders()).origin, site.origin, 'a cross-origin fetch');
    const response = await request.response();
    assert.equal(response.status(), 200);
    assert.equal((await response.allHeaders())['access-control-allow-origin'], site.origin);
  }
  assert.deepEqual(seen.errors, [], 'no CORS refusal nor any other error in the page');
  await assertTokenNeverSent(assert, seen, secret);
  assert.ok(
    site.received.every(({ url, referer }) => !url.includes(secret) && !referer.includes(secret)),
    'the static server never saw the token',
  );
});

test('a page whose catch_up paging keeps failing backs off instead of reconnecting hot', async (t) => {
  const name = room('browser.cors.fail');
  const { page, seen } = await joinedAndLeft(name, token({ sub: 'chromium' }));
  t.after(() => page.close());
  await publishMissed(name, MISSED);
  // The history is unreachable (a proxy in the way, a network fault); the
  // socket and its welcome still work.
  await page.route(
    (url) => url.pathname === `/v1/rooms/${name}/messages`,
    (route) => route.abort('connectionfailed'),
  );

  const joins = seen.sockets.length;
  await page.click('#join-button');
  const windowMs = 6000;
  // What is measured is how many connects happen in a fixed time, so the
  // test waits out that time.
  await page.waitForTimeout(windowMs);
  const connects = seen.sockets.length - joins;
  t.diagnostic(`${connects} connects in ${windowMs} ms`);
  // The client's backoff (250 ms doubling to 30 s, full jitter) allows a
  // handful of connects in 6 s; a reset on every welcome made it dozens.
  assert.ok(connects >= 2, `the failing catch-up made the page reconnect (${connects} connects)`);
  assert.ok(connects <= 10, `${connects} connects in ${windowMs} ms is a hot loop`);
  const failures = await page.$$eval('#log li', (items) =>
    items.filter((li) => li.textContent.includes('closed (4000 catching up')).length,
  );
  assert.ok(failures >= 1, 'the page reconnected because its catch-up failed');
  assert.deepEqual(await page.evaluate(() => window.delivered), [], 'nothing delivered past the gap');
});
