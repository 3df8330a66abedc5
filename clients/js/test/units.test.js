// The client's socket-free parts: backoff, sequence bookkeeping, token
// expiry, and the type declarations naming what the package exports.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as client from '../src/index.js';
import { Backoff, Sequence, refreshDelay, tokenExpiry } from '../src/index.js';

test('backoff caps grow exponentially to the maximum and every delay lies under its cap', () => {
  const backoff = new Backoff({ initialMs: 100, maxMs: 1000, random: () => 0.999999 });
  const delays = Array.from({ length: 8 }, () => backoff.next());
  assert.deepEqual(delays, [99, 199, 399, 799, 999, 999, 999, 999]);
  backoff.reset();
  assert.equal(backoff.next(), 99);
});

test('backoff uses full jitter: the whole window from zero is used', () => {
  const backoff = new Backoff({ initialMs: 1000, maxMs: 1000 });
  const delays = Array.from({ length: 2000 }, () => backoff.next());
  assert.ok(delays.every((d) => d >= 0 && d < 1000));
  assert.ok(Math.min(...delays) < 50, 'low end of the window used');
  assert.ok(Math.max(...delays) > 950, 'high end of the window used');
});

test('backoff refuses nonsense bounds', () => {
  assert.throws(() => new Backoff({ initialMs: 0 }), RangeError);
  assert.throws(() => new Backoff({ initialMs: 10, maxMs: 5 }), RangeError);
});

test('sequence delivers the next seq, drops duplicates and reports gaps', () => {
  const seq = new Sequence();
  assert.deepEqual(seq.resumeQuery(), {});
  assert.equal(seq.welcome({ epoch: 'e_1', head: 4, recovered: false }), null, 'a first connect is no resync');
  assert.deepEqual(seq.resumeQuery(), { since: '4', epoch: 'e_1' });
  assert.equal(seq.accept(5), 'deliver');
  assert.equal(seq.accept(5), 'duplicate');
  assert.equal(seq.accept(3), 'duplicate');
  assert.equal(seq.accept(7), 'gap');
  assert.equal(seq.lastSeq, 5, 'a gap does not move the position');
  assert.equal(seq.accept(6), 'deliver');
});

test('sequence reports a resync when the room could not resume', () => {
  const seq = new Sequence(10, 'e_old');
  assert.deepEqual(seq.resumeQuery(), { since: '10', epoch: 'e_old' });
  assert.deepEqual(seq.welcome({ epoch: 'e_new', head: 3, recovered: false }), {
    previousEpoch: 'e_old',
    since: 10,
    epoch: 'e_new',
    head: 3,
  });
  assert.equal(seq.accept(4), 'deliver');
  assert.equal(seq.welcome({ epoch: 'e_new', head: 9, recovered: true }), null);
  assert.equal(seq.lastSeq, 4, 'a recovered resume keeps the position; the replay follows');
});

test('tokenExpiry reads exp and tolerates garbage', () => {
  const payload = Buffer.from(JSON.stringify({ sub: 'a', exp: 1790000000 })).toString('base64url');
  assert.equal(tokenExpiry(`h.${payload}.s`), 1790000000);
  assert.equal(tokenExpiry('not a jwt'), null);
  assert.equal(tokenExpiry('a.%%%.b'), null);
});

test('refresh is scheduled ahead of expiry, half-way for short tokens, never negative', () => {
  const now = 1_000_000_000_000;
  const exp = (ms) => (now + ms) / 1000;
  assert.equal(refreshDelay(exp(3_600_000), now, 60_000), 3_540_000);
  assert.equal(refreshDelay(exp(40_000), now, 60_000), 20_000);
  assert.equal(refreshDelay(exp(-5_000), now, 60_000), 0);
});

test('index.d.ts declares exactly what src/index.js exports', () => {
  const declarations = readFileSync(new URL('../index.d.ts', import.meta.url), 'utf8');
  const declared = [...declarations.matchAll(/^export (?:class|function) (\w+)/gm)].map(([, name]) => name);
  assert.deepEqual(declared.sort(), Object.keys(client).sort());
});
