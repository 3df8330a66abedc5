// The demo page's "who is here" panel in headless Chromium, against the real
// worker under `wrangler dev`: the page joins with a presence token, node
// clients join the same room (Ann with an `info` claim, Bob on two devices,
// Cy without the presence right), and the panel lists the members and the
// counts as the room describes them; clients close, and the panel follows.
// Past its members limit (3 here) the room only counts, and the panel says
// so; back under it, the panel lists the members again. Every wait is on
// the page's DOM, bounded.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { RoomcastClient } from '../../clients/js/src/index.js';
import { Worker, token, room, nextEvent } from '../js/worker.mjs';
import { launch, waitInPage, watch } from './chromium.mjs';

const WAIT_MS = 15_000;
const MEMBERS_LIMIT = 3;

let worker;
let browser;

before(async () => {
  worker = await Worker.start({
    PRESENCE_INTERVAL_MS: '200',
    PRESENCE_GRACE_MS: '3000',
    PRESENCE_MEMBERS_LIMIT: String(MEMBERS_LIMIT),
  });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  worker?.stop();
});

/** The panel's rows as `[sub, devices, info]`. */
function rows(page) {
  return page.$$eval('#members tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
}

/**
 * Resolves once the panel shows `expected.rows` (as `rows` reads them) and
 * `expected.counts` (connections, users, members), or rejects after a
 * bound with the page's log.
 */
function panelShows(page, expected) {
  return waitInPage(
    page,
    ({ rows: wanted, counts }) => {
      const shown = [...document.querySelectorAll('#members tr')].map((tr) =>
        [...tr.children].map((td) => td.textContent),
      );
      const numbers = ['connections', 'users', 'members'].map(
        (name) => document.querySelector(`#occupancy-${name}`).textContent,
      );
      return JSON.stringify(shown) === JSON.stringify(wanted) && JSON.stringify(numbers) === JSON.stringify(counts);
    },
    expected,
    WAIT_MS,
  );
}

test('the who-is-here panel lists the members and counts of the room, and follows them', async (t) => {
  const name = room('browser.presence');
  const page = await browser.newPage();
  page.setDefaultTimeout(WAIT_MS);
  const seen = watch(page);
  t.after(() => page.close());

  const secret = token({ sub: 'chromium', presence: ['*'] });
  await page.goto(worker.url(`/?room=${name}#token=${secret}`));
  await page.click('#join-button');
  await page.waitForSelector('#state[data-state="open"]');
  await page.waitForSelector('#members tr[data-sub="chromium"]');

  const join = async (sub, claims) => {
    const client = new RoomcastClient({
      url: worker.url(),
      room: name,
      token: token({ sub, ...claims }),
      WebSocket,
      backoff: { initialMs: 100, maxMs: 1000 },
    });
    t.after(() => client.close());
    await nextEvent(client, 'welcome', WAIT_MS);
    return client;
  };
  const ann = await join('ann', { presence: ['*'], info: { name: 'Ann' } });
  await join('bob', { presence: ['*'] });
  const bobLaptop = await join('bob', { presence: ['*'] });
  // Cy is counted, never listed.
  await join('cy', {});

  await panelShows(page, {
    rows: [
      ['ann', '1', '{"name":"Ann"}'],
      ['bob', '2', ''],
      ['chromium', '1', ''],
    ],
    counts: ['5', '4', '3'],
  });

  // One of Bob's devices closes: he stays, on one.
  bobLaptop.close();
  await panelShows(page, {
    rows: [
      ['ann', '1', '{"name":"Ann"}'],
      ['bob', '1', ''],
      ['chromium', '1', ''],
    ],
    counts: ['4', '4', '3'],
  });

  // Ann closes: she leaves, and the page says so.
  ann.close();
  await panelShows(page, {
    rows: [
      ['bob', '1', ''],
      ['chromium', '1', ''],
    ],
    counts: ['3', '3', '2'],
  });
  const logged = await page.$$eval('#log li', (items) => items.map((li) => li.textContent));
  assert.ok(logged.some((line) => line.endsWith(' ann left')), `ann left: ${logged.join(' | ')}`);
  assert.ok(!logged.some((line) => line.endsWith(' bob left')), `bob stayed: ${logged.join(' | ')}`);

  // Two more members: past the limit, the room only counts.
  const crowd = await Promise.all(['dan', 'eve'].map((sub) => join(sub, { presence: ['*'] })));
  await page.waitForSelector('#presence[data-counts-only="true"]');
  assert.ok(await page.isVisible('#counts-only'));
  await panelShows(page, { rows: [], counts: ['5', '5', '4'] });

  // Back under it: the members are listed again.
  for (const client of crowd) client.close();
  await page.waitForSelector('#presence[data-counts-only="false"]');
  assert.ok(!(await page.isVisible('#counts-only')));
  await panelShows(page, {
    rows: [
      ['bob', '1', ''],
      ['chromium', '1', ''],
    ],
    counts: ['3', '3', '2'],
  });

  await page.click('#leave-button');
  await page.waitForSelector('#state[data-state="idle"]');
  assert.deepEqual(await rows(page), []);
  assert.equal(await page.textContent('#occupancy-connections'), '–');
  assert.deepEqual(seen.errors, [], 'no page errors');
});
