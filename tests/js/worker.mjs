/**
 * The real worker under `wrangler dev`, for the JavaScript and browser tests.
 *
 * The Rust end-to-end harness (`tests/src/lib.rs`) does the same for the Rust
 * tests; this is its counterpart for node's test runner: a fresh port, a fresh
 * state directory, the test secret, and a process group killed on stop so no
 * workerd outlives a test.
 *
 * @module
 */
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { createWriteStream, mkdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** Where tests leave logs and screenshots (gitignored; CI may upload it). */
export const ARTIFACTS = path.join(REPO, 'test-artifacts');
export const SECRET = 'roomcast-js-test-secret-of-32-bytes';
const STARTUP_MS = 120_000;

/** A port the OS says is free now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Resolves once `url` answers 200, or rejects after `ms` (with the log's tail). */
async function waitOk(url, ms, logFile) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(2000) });
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  const tail = readFileSync(logFile, 'utf8').split('\n').slice(-30).join('\n');
  throw new Error(`${url} not up within ${ms} ms; wrangler log:\n${tail}`);
}

export class Worker {
  /**
   * Starts `wrangler dev` with `vars` (besides `JWT_SECRET`) on a fresh state directory.
   * @param {Record<string, string>} [vars]
   */
  static async start(vars = {}) {
    return Worker.#launch(vars, await freePort());
  }

  static async #launch(vars, port) {
    const inspector = await freePort();
    const dir = path.join(ARTIFACTS, 'js', `worker-${port}`);
    mkdirSync(dir, { recursive: true });
    // build/wrangler.toml (written by `make test-js`) is wrangler.toml without
    // its build step, whose restart after start races other workers for ports.
    const args = ['dev', '--config', 'build/wrangler.toml', '--ip', '127.0.0.1', '--port', String(port), '--inspector-port', String(inspector)];
    args.push('--persist-to', path.join(dir, 'state'), '--var', `JWT_SECRET:${SECRET}`);
    for (const [name, value] of Object.entries(vars)) args.push('--var', `${name}:${value}`);
    const logFile = path.join(dir, 'wrangler.log');
    const log = createWriteStream(logFile, { flags: 'a' });
    const child = spawn(path.join(REPO, 'node_modules/.bin/wrangler'), args, {
      cwd: REPO,
      detached: true,
      env: { ...process.env, WRANGLER_SEND_METRICS: 'false', CI: 'true' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout.pipe(log);
    child.stderr.pipe(log);
    const worker = new Worker(child, port, vars);
    try {
      await waitOk(worker.url('/healthz'), STARTUP_MS, logFile);
    } catch (e) {
      worker.stop();
      throw e;
    }
    return worker;
  }

  constructor(child, port, vars) {
    this.child = child;
    this.port = port;
    this.vars = vars;
  }

  /**
   * Kills the worker and starts it again on the same port and state, as a
   * deploy or crash would: every socket is dropped by the server side.
   * @returns {Promise<Worker>} the new instance
   */
  async restart() {
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.stop();
    await exited;
    return Worker.#launch(this.vars, this.port);
  }

  url(pathname = '') {
    return `http://127.0.0.1:${this.port}${pathname}`;
  }

  /** Kills wrangler and its workerd children. */
  stop() {
    try {
      process.kill(-this.child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }

  /**
   * Publishes `data` over HTTP; resolves with the `{id, seq, duplicate}` receipt.
   * @param {string} room
   * @param {string} token
   * @param {unknown} data
   */
  async publish(room, token, data) {
    return this.#post(room, token, { data });
  }

  /**
   * Publishes a batch (`[{data, id?}]`) over HTTP; resolves with the receipts.
   * @param {string} room
   * @param {string} token
   * @param {object[]} messages
   */
  async publishBatch(room, token, messages) {
    return this.#post(room, token, { messages });
  }

  async #post(room, token, body) {
    const response = await fetch(this.url(`/v1/rooms/${room}/messages`), {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    const answer = await response.json();
    if (response.status !== 201) throw new Error(`publish: ${response.status} ${JSON.stringify(answer)}`);
    return answer;
  }

  /**
   * A page of the room's history after `since`.
   * @param {string} room
   * @param {string} token
   * @param {number} since
   */
  async history(room, token, since) {
    const response = await fetch(this.url(`/v1/rooms/${room}/messages?since=${since}`), {
      headers: { authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(10_000),
    });
    return response.json();
  }
}

const base64url = (value) => Buffer.from(value).toString('base64url');

/**
 * An HS256 token signed with the test secret. `presence` (room patterns
 * whose members it appears among and sees) and `info` (its connections'
 * meta) are left out unless given.
 * @param {{sub?: string, rooms?: string[], publish?: string[], presence?: string[], info?: unknown, ttlSecs?: number}} [claims]
 */
export function token({ sub = 'tester', rooms = ['*'], publish = ['*'], presence, info, ttlSecs = 3600 } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const header = base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  // JSON.stringify drops the claims left undefined.
  const payload = base64url(JSON.stringify({ sub, rooms, publish, presence, info, iat: now, exp: now + ttlSecs }));
  const signature = createHmac('sha256', SECRET).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${signature}`;
}

let rooms = 0;
/** A unique room name per call, so tests sharing a worker never meet. */
export function room(label) {
  rooms += 1;
  return `${label}.${process.pid}.${rooms}`;
}

/**
 * Resolves with the first `type` event on `target` whose detail passes
 * `accept`, or rejects after `ms`.
 */
export function nextEvent(target, type, ms = 10_000, accept = () => true) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      target.removeEventListener(type, listener);
      reject(new Error(`no ${type} event within ${ms} ms`));
    }, ms);
    const listener = (event) => {
      if (!accept(event.detail)) return;
      clearTimeout(timer);
      target.removeEventListener(type, listener);
      resolve(event.detail);
    };
    target.addEventListener(type, listener);
  });
}
