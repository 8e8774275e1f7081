// Test helpers: a real `fanfare serve` (the workspace's debug build unless FANFARE_BIN says
// otherwise) on 127.0.0.1, a TCP proxy the tests can cut, and polling with a deadline.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

/** Cargo's target directory: CARGO_TARGET_DIR (a relative one from the repository root), else target/. */
const TARGET_DIR = resolve(here, '../../..', process.env.CARGO_TARGET_DIR || 'target');

/** The fanfare binary. */
export const FANFARE_BIN = process.env.FANFARE_BIN ?? join(TARGET_DIR, 'debug', 'fanfare');

function binary(): string {
  if (!existsSync(FANFARE_BIN)) {
    throw new Error(`no fanfare binary at ${FANFARE_BIN}: run \`cargo build\` at the repository root first (or set FANFARE_BIN or CARGO_TARGET_DIR)`);
  }
  return FANFARE_BIN;
}

/** A running broker. */
export class Broker {
  child: ChildProcess;
  addr: string;
  #extra: string[];

  private constructor(child: ChildProcess, addr: string, extra: string[]) {
    this.child = child;
    this.addr = addr;
    this.#extra = extra;
  }

  /** Starts `fanfare serve` with `extra` flags on `listen` (default: a port the OS picks). */
  static async start(extra: string[] = [], listen = '127.0.0.1:0'): Promise<Broker> {
    const args = ['serve', '--listen', listen, '--shards', '2', '--no-pin', ...extra];
    const child = spawn(binary(), args, { stdio: ['ignore', 'pipe', 'ignore'] });
    const addr = await new Promise<string>((ok, fail) => {
      const timer = setTimeout(() => fail(new Error('fanfare did not start in 20 s')), 20_000);
      child.once('exit', (code) => fail(new Error(`fanfare exited with ${code}`)));
      const lines = createInterface({ input: child.stdout! });
      lines.once('line', (line) => {
        clearTimeout(timer);
        // "fanfare listening on ADDR (...)"
        const a = line.split(/\s+/)[3];
        if (a) ok(a);
        else fail(new Error(`unexpected first line: ${line}`));
      });
    });
    return new Broker(child, addr, extra);
  }

  /** ws:// URL of the broker. */
  get ws(): string {
    return `ws://${this.addr}/v1/ws`;
  }

  /** http:// base URL of the broker. */
  get http(): string {
    return `http://${this.addr}`;
  }

  /** Kills it with SIGKILL and waits for it to be gone. */
  async kill9(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const gone = new Promise((ok) => this.child.once('exit', ok));
    this.child.kill('SIGKILL');
    await gone;
  }

  /** Starts it again on the same address (after `kill9`). */
  async restart(): Promise<void> {
    await this.kill9();
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        const b = await Broker.start(this.#extra, this.addr);
        this.child = b.child;
        return;
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await sleep(100); // the port may linger a moment
      }
    }
  }

  /** Publishes over HTTP (not through the client under test). */
  async post(ns: string, topic: string, body: string, token?: string): Promise<{ epoch: string; seq: string }> {
    const headers: Record<string, string> = {};
    if (token) headers.authorization = `Bearer ${token}`;
    const r = await fetch(`${this.http}/v1/topics/${ns}/${topic}`, { method: 'POST', body, headers });
    if (r.status !== 200) throw new Error(`publish answered ${r.status}: ${await r.text()}`);
    const j = (await r.json()) as { epoch: number; seq: number };
    return { epoch: String(j.epoch), seq: String(j.seq) };
  }
}

/** A settings file with one HS256 key; `mint` makes tokens signed with it. */
export function authConfig(authToml = ''): { path: string; mint: (sub: string, rights: string[], ttl: string) => string } {
  const dir = mkdtempSync(join(tmpdir(), 'fanfare-ts-'));
  const path = join(dir, 'auth.toml');
  const key = execFileSync(binary(), ['token', 'keygen', '--kid', 'k1', '--alg', 'HS256']).toString();
  writeFileSync(path, `[auth]\n${authToml}\n${key}`);
  const mint = (sub: string, rights: string[], ttl: string) =>
    execFileSync(binary(), [
      'token', 'create', '--config', path, '--sub', sub, '--ns', '*', '--topic', '*', '--ttl', ttl,
      ...rights.map((r) => `--${r}`),
    ]).toString().trim();
  return { path, mint };
}

/** A TCP proxy in front of `target`; `cut()` drops every connection through it. */
export class Proxy {
  server: net.Server;
  sockets = new Set<net.Socket>();
  port = 0;

  constructor(target: string) {
    const [host, port] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))];
    this.server = net.createServer((c) => {
      const up = net.connect(port, host);
      this.sockets.add(c).add(up);
      c.pipe(up).pipe(c);
      const end = () => {
        c.destroy();
        up.destroy();
        this.sockets.delete(c);
        this.sockets.delete(up);
      };
      c.on('error', end).on('close', end);
      up.on('error', end).on('close', end);
    });
  }

  async listen(): Promise<string> {
    await new Promise<void>((ok) => this.server.listen(0, '127.0.0.1', ok));
    this.port = (this.server.address() as net.AddressInfo).port;
    return `ws://127.0.0.1:${this.port}/v1/ws`;
  }

  cut(): void {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise((ok) => this.server.close(ok));
  }
}

export const sleep = (ms: number) => new Promise((ok) => setTimeout(ok, ms));

/** Polls `f` until it is true; fails with `what` after `ms`. */
export async function until(what: string, f: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!f()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}
