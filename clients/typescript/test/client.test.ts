// The client against a real `fanfare serve`, in Node with the `ws` package.

import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import {
  FanfareClient,
  FanfareError,
  type ClientState,
  type Discontinuity,
  type Message,
  type PresenceEvent,
  type Subscription,
  type WebSocketCtor,
} from '../src/index.js';
import { authConfig, Broker, Proxy, until } from './broker.js';

const text = (m: Message) => new TextDecoder().decode(m.data);

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function broker(extra: string[] = []): Promise<Broker> {
  const b = await Broker.start(extra);
  cleanups.push(() => b.kill9());
  return b;
}

function client(url: string, opts: Partial<ConstructorParameters<typeof FanfareClient>[0]> = {}): FanfareClient {
  const c = new FanfareClient({
    url,
    WebSocket: WebSocket as unknown as WebSocketCtor,
    minReconnectDelayMs: 50,
    maxReconnectDelayMs: 500,
    ...opts,
  });
  cleanups.push(() => c.close());
  c.connect();
  return c;
}

/** Everything a subscription reports, in order. */
function record(sub: Subscription) {
  const r = {
    messages: [] as Message[],
    discontinuities: [] as Discontinuity[],
    presence: [] as PresenceEvent[],
    errors: [] as FanfareError[],
    subscribed: 0,
  };
  sub.on('message', (m) => r.messages.push(m));
  sub.on('discontinuity', (d) => r.discontinuities.push(d));
  sub.on('presence', (e) => r.presence.push(e));
  sub.on('error', (e) => r.errors.push(e));
  sub.on('subscribed', () => r.subscribed++);
  return r;
}

describe('publish and subscribe', () => {
  it('delivers in order with positions, and answers publishes with them', async () => {
    const b = await broker();
    const c = client(b.ws);
    const sub = c.subscribe('chat', 'room-1');
    const r = record(sub);
    await until('subscribed', () => sub.state === 'subscribed');
    const acks = [];
    for (const m of ['a', 'b', 'c']) acks.push(await c.publish('chat', 'room-1', m));
    await until('3 messages', () => r.messages.length === 3);
    expect(r.messages.map(text)).toEqual(['a', 'b', 'c']);
    expect(r.messages.map((m) => m.seq)).toEqual(acks.map((a) => a.seq));
    expect(acks[1]!.seq).toBe(acks[0]!.seq + 1n);
    // No data dir: the broker says it kept them in memory.
    expect(acks.map((a) => a.durability)).toEqual(['memory', 'memory', 'memory']);
    expect(sub.position).toEqual({ epoch: acks[2]!.epoch, nextSeq: acks[2]!.seq + 1n });
    expect(c.state).toBe('connected');
  });

  it('holds many subscriptions on one connection, from the last N or a position', async () => {
    const b = await broker();
    for (let i = 1; i <= 5; i++) await b.post('ns', 'hist', `h${i}`);
    const c = client(b.ws);
    const last = record(c.subscribe('ns', 'hist', { from: { kind: 'lastN', count: 2 } }));
    const first = await c.publish('ns', 'other', 'x');
    await c.publish('ns', 'other', 'y');
    const at = record(c.subscribe('ns', 'other', { from: { kind: 'position', epoch: first.epoch, seq: first.seq } }));
    await until('history', () => last.messages.length === 2 && at.messages.length === 2);
    expect(last.messages.map(text)).toEqual(['h4', 'h5']);
    expect(at.messages.map(text)).toEqual(['x', 'y']);
    expect(() => c.subscribe('ns', 'hist')).toThrow(FanfareError);
  });
});

describe('reconnect and resume', () => {
  it('resumes after a dropped connection with no gap and no duplicate', async () => {
    const b = await broker();
    const proxy = new Proxy(b.addr);
    cleanups.push(() => proxy.close());
    const url = await proxy.listen();
    const states: ClientState[] = [];
    const c = client(url);
    c.on('state', (s) => states.push(s));
    const sub = c.subscribe('ns', 'resume');
    const r = record(sub);
    await until('subscribed', () => sub.state === 'subscribed');
    for (let i = 0; i < 5; i++) await b.post('ns', 'resume', `m${i}`);
    await until('5 messages', () => r.messages.length === 5);
    proxy.cut();
    // Published while the client is away: history covers it.
    for (let i = 5; i < 10; i++) await b.post('ns', 'resume', `m${i}`);
    await until('10 messages', () => r.messages.length === 10);
    for (let i = 10; i < 12; i++) await b.post('ns', 'resume', `m${i}`);
    await until('12 messages', () => r.messages.length === 12);
    expect(r.messages.map(text)).toEqual(Array.from({ length: 12 }, (_, i) => `m${i}`));
    expect(r.discontinuities).toEqual([]);
    expect(r.subscribed).toBe(2);
    expect(states).toContain('disconnected');
    expect(c.state).toBe('connected');
  });

  it('after the server is killed and restarted, says exactly what was missed, and sends queued publishes', async () => {
    const b = await broker();
    const c = client(b.ws);
    const sub = c.subscribe('ns', 'crash');
    const r = record(sub);
    await until('subscribed', () => sub.state === 'subscribed');
    const acked = [];
    for (let i = 0; i < 3; i++) acked.push(await c.publish('ns', 'crash', `before${i}`));
    await until('3 messages', () => r.messages.length === 3);
    await b.kill9();
    await until('disconnected', () => c.state !== 'connected');
    // A publish made while the server is down waits and lands once it is back.
    const late = c.publish('ns', 'crash', 'after');
    await b.restart();
    const p = await late;
    await until('the message after the restart', () => r.messages.length === 4);
    expect(text(r.messages[3]!)).toBe('after');
    // History was in memory: the topic's new epoch is reported once, exactly.
    expect(r.discontinuities).toHaveLength(1);
    const d = r.discontinuities[0]!;
    expect(d.lastEpoch).toBe(acked[0]!.epoch);
    expect(d.lastSeq).toBe(acked[2]!.seq);
    expect(d.newEpoch).toBe(p.epoch);
    expect(d.newEpoch).not.toBe(d.lastEpoch);
    expect(r.messages[3]!.epoch).toBe(p.epoch);
    expect(d.newSeq).toBeLessThanOrEqual(p.seq);
  });
});

describe('tokens', () => {
  it('refreshes a token before it expires and keeps the connection', async () => {
    // A second of grace: a client that waited for TokenExpired would be cut off.
    const { path, mint } = authConfig('expiry_grace_secs = 1');
    const b = await broker(['--config', path]);
    let minted = 0;
    let firstMint = 0;
    const errors: FanfareError[] = [];
    const states: ClientState[] = [];
    const c = client(b.ws, {
      getToken: async () => {
        if (minted++ === 0) firstMint = Date.now();
        return mint('alice', ['publish', 'subscribe'], '4');
      },
      refreshMarginMs: 2_500,
    });
    c.on('state', (s) => states.push(s));
    c.on('error', (e) => errors.push(e));
    const sub = c.subscribe('ns', 'tok');
    const r = record(sub);
    await until('subscribed', () => sub.state === 'subscribed');
    // The first token expires within 4 s of minting and its grace is 1 s: wait until that is
    // past and the client has refreshed at least twice; the connection must still be up.
    await until('refreshes past the first token\'s expiry and grace', () => minted >= 3 && Date.now() - firstMint > 5_500, 20_000);
    const p = await c.publish('ns', 'tok', 'still here');
    await until('the message', () => r.messages.length === 1);
    expect(r.messages[0]!.publisherId).toBe('alice');
    expect(p.seq).toBe(r.messages[0]!.seq);
    expect(minted).toBeGreaterThanOrEqual(3);
    expect(states.filter((s) => s === 'disconnected')).toEqual([]);
    expect(errors).toEqual([]);
  });

  it('reports refusals as typed errors, never as unhandled rejections', async () => {
    const { path, mint } = authConfig();
    const b = await broker(['--config', path]);
    const c = client(b.ws, { getToken: async () => mint('bob', ['subscribe'], '1h') });
    const sub = c.subscribe('ns', 'ro');
    const r = record(sub);
    await until('subscribed', () => sub.state === 'subscribed');
    await expect(c.publish('ns', 'ro', 'x')).rejects.toMatchObject({ code: 'Forbidden' });
    // Member lists need the presence right.
    await expect(c.presence('ns', 'ro')).rejects.toMatchObject({ code: 'Forbidden' });
    expect((await c.presence('ns', 'ro', { members: false })).occupancy).toBe(1n);
    expect(r.errors).toEqual([]);
  });
});

describe('bad input and limits', () => {
  it('rejects bad names, oversized payloads and refused subscriptions with their codes', async () => {
    const b = await broker(['--max-message-bytes', '1024']);
    const c = client(b.ws);
    const errors: FanfareError[] = [];
    c.on('error', (e) => errors.push(e));
    await expect(c.publish('ns', 'bad/name', 'x')).rejects.toMatchObject({ code: 'InvalidName' });
    await expect(c.publish('ns', 'big', new Uint8Array(2048))).rejects.toMatchObject({ code: 'MessageTooLarge' });
    const sub = c.subscribe('ns', 'no spaces');
    const r = record(sub);
    await until('failed', () => sub.state === 'failed');
    expect(r.errors[0]!.code).toBe('InvalidName');
    // The connection is unharmed.
    expect((await c.publish('ns', 'ok', 'fine')).seq).toBe(1n);
    expect(c.state).toBe('connected');
  });

  it('times out a request the server cannot answer', async () => {
    const b = await broker();
    await b.kill9();
    const c = client(b.ws, { requestTimeoutMs: 300 });
    await expect(c.publish('ns', 't', 'x')).rejects.toMatchObject({ code: 'Timeout' });
    c.close();
    await expect(c.publish('ns', 't', 'x')).rejects.toMatchObject({ code: 'Closed' });
  });
});

describe('presence', () => {
  it('lists members and reports joins and leaves', async () => {
    const b = await broker();
    const watcher = client(b.ws);
    const ws = watcher.subscribe('ns', 'room', { presence: { memberEvents: true } });
    const w = record(ws);
    // Events go to live subscriptions: a join before the watcher is live is only in the list.
    await until('the watcher subscribed', () => ws.state === 'subscribed');
    const ada = client(b.ws);
    const s = ada.subscribe('ns', 'room', { presence: { enter: true, clientId: 'ada', info: new TextEncoder().encode('hi') } });
    await until('ada subscribed', () => s.state === 'subscribed');
    expect(s.memberId).not.toBe(0n);
    await until('a join', () => w.presence.some((e) => e.action === 'join'));
    const st = await watcher.presence('ns', 'room');
    expect(st.occupancy).toBe(2n);
    expect(st.members.map((m) => [m.clientId, m.memberId])).toEqual([['ada', s.memberId]]);
    ada.close();
    await until('a leave', () => w.presence.some((e) => e.action === 'leave' && e.member?.memberId === s.memberId));
  });
});
