/**
 * What the browser tests share: Debian's Chromium driven by playwright-core,
 * a static server that serves the demo page from an origin of its own, and
 * a page watcher that records what the page logged and requested.
 *
 * @module
 */
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { REPO } from '../js/worker.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** Headless Chromium that stays off the network it does not have. */
export function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    timeout: 60_000,
    // The machine has no internet: without these Chromium keeps dialling Google.
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css' };

/**
 * Serves `public/` (its `client` link included) on a loopback port of its
 * own, so the page's origin is not the worker's. `received` holds the URL
 * and `Referer` of every request, as they arrived.
 * @returns {Promise<{origin: string, received: {url: string, referer: string}[], close: () => Promise<void>}>}
 */
export async function servePublic() {
  const root = path.join(REPO, 'public');
  const received = [];
  const server = createServer(async (req, res) => {
    received.push({ url: req.url, referer: req.headers.referer ?? '' });
    const pathname = new URL(req.url, 'http://x').pathname;
    const file = path.join(root, pathname === '/' ? 'index.html' : decodeURIComponent(pathname));
    if (!file.startsWith(root + path.sep)) {
      res.writeHead(403).end();
      return;
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream' }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    origin: `http://127.0.0.1:${server.address().port}`,
    received,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/**
 * Records the page's errors (uncaught and `console.error`, which is where
 * Chromium reports failed WebSockets and CORS refusals), every request it
 * made, and every WebSocket it opened.
 */
export function watch(page) {
  const seen = { errors: [], requests: [], sockets: [] };
  page.on('pageerror', (e) => seen.errors.push(String(e)));
  page.on('console', (m) => m.type() === 'error' && seen.errors.push(m.text()));
  page.on('request', (r) => seen.requests.push(r));
  page.on('websocket', (ws) => seen.sockets.push({ url: ws.url(), at: Date.now() }));
  return seen;
}

/**
 * Makes the page record the seq of every message its client delivers, in
 * `window.delivered`: the demo page puts its client in `window.roomcast`
 * before the client can receive anything.
 */
export function recordDeliveries(page) {
  return page.addInitScript(() => {
    window.delivered = [];
    let current = null;
    Object.defineProperty(window, 'roomcast', {
      configurable: true,
      get: () => current,
      set: (client) => {
        current = client;
        client?.addEventListener('message', (e) => window.delivered.push(e.detail.seq));
      },
    });
  });
}

/**
 * Resolves once `predicate(arg)` holds in the page, or rejects after `ms`
 * with the page's event log, which says why it did not (closes, their
 * reasons, errors).
 */
export async function waitInPage(page, predicate, arg, ms) {
  try {
    await page.waitForFunction(predicate, arg, { timeout: ms });
  } catch (e) {
    const log = await page.$$eval('#log li', (items) => items.map((li) => li.textContent).join('\n'));
    throw new Error(`${e.message}\nthe page's log, newest first:\n${log}`);
  }
}

/**
 * Asserts with `assert` that no request the page made carried `token` in
 * its URL or `Referer`, nor any WebSocket URL it opened. Playwright reports
 * a navigation's URL with its fragment, which Chromium does not send.
 */
export async function assertTokenNeverSent(assert, seen, token) {
  for (const request of seen.requests) {
    const sent = new URL(request.url());
    sent.hash = '';
    assert.ok(!sent.href.includes(token), `token in the URL of ${request.method()} ${sent.href}`);
    const referer = (await request.allHeaders()).referer ?? '';
    assert.ok(!referer.includes(token), `token in the Referer of ${sent.href}`);
  }
  for (const { url } of seen.sockets) assert.ok(!url.includes(token), `token in the WebSocket URL ${url}`);
}
