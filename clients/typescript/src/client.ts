// The Fanfare client: one WebSocket, many subscriptions, reconnect with jittered back-off,
// resume from (epoch, seq), and exactly one typed `discontinuity` event for anything missed.

import {
  decodeServer,
  encodeClient,
  type ClientMsg,
  type Durability,
  type From,
  type Item,
  type PresenceEvent,
  type PresenceOptions,
  type PresenceState,
  ProtocolError,
  type ServerMsg,
} from './codec.js';
import { Emitter } from './emitter.js';
import { codeName, FanfareError } from './errors.js';

/** The part of the WebSocket API the client uses (the browser's, or the `ws` package's). */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code?: number; reason?: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket constructor: `globalThis.WebSocket` in browsers, `WebSocket` from `ws` in Node. */
export type WebSocketCtor = new (url: string) => WebSocketLike;

/** Client settings; only `url` is required. */
export interface ClientOptions {
  /** `ws://host:port/v1/ws` or `wss://…`. */
  url: string;
  /** Called before each connection and before a token expires; resolves to a token or null. */
  getToken?: () => Promise<string | null | undefined>;
  /** The WebSocket implementation (default: `globalThis.WebSocket`). */
  WebSocket?: WebSocketCtor;
  /** Reconnect back-off: the first delay's ceiling, and the largest (full jitter in between). */
  minReconnectDelayMs?: number;
  maxReconnectDelayMs?: number;
  /** The client pings this often; with nothing received for `pingIntervalMs + pongTimeoutMs`
   * the connection is taken for dead and replaced. */
  pingIntervalMs?: number;
  pongTimeoutMs?: number;
  /** A publish or presence query not answered in this time is rejected `Timeout`. */
  requestTimeoutMs?: number;
  /** Tokens are refreshed this long before their `exp`. */
  refreshMarginMs?: number;
  /** Random numbers in [0, 1) for the back-off jitter (tests pass a fixed one). */
  random?: () => number;
}

/** The connection's state. */
export type ClientState = 'disconnected' | 'connecting' | 'connected' | 'closed';

/** A subscription's state. */
export type SubscriptionState = 'subscribing' | 'subscribed' | 'unsubscribed' | 'failed';

/** A position: the epoch and the next sequence a subscription will deliver. */
export interface Position {
  epoch: bigint;
  nextSeq: bigint;
}

/** A delivered message. */
export interface Message {
  epoch: bigint;
  seq: bigint;
  data: Uint8Array;
  publisherId?: string;
}

/**
 * Messages that will never arrive: everything after `lastSeq` of `lastEpoch` up to
 * `newSeq - 1` of `newEpoch` (when the epochs differ, everything after `lastSeq` of the old
 * epoch and before `newSeq` of the new one). Delivery goes on at `newSeq`.
 */
export interface Discontinuity {
  lastEpoch: bigint;
  lastSeq: bigint;
  newEpoch: bigint;
  newSeq: bigint;
}

/** Where a publish landed, and how the broker kept it. */
export interface Published {
  epoch: bigint;
  seq: bigint;
  durability: Durability;
}

/** Options of one publish. */
export interface PublishOptions {
  /** Makes retries of this publish land once (default: a random key per publish, so the
   * client's own retries after a reconnect never duplicate it). */
  idempotencyKey?: string;
}

/** Options of one subscription. */
export interface SubscribeOptions {
  /** Where it starts (default: latest). After a reconnect it resumes from its position. */
  from?: From;
  /** Presence: enter the member list, receive presence events. */
  presence?: PresenceOptions;
}

/** Events of a {@link FanfareClient}. */
export type ClientEvents = {
  state: (state: ClientState, prev: ClientState) => void;
  error: (e: FanfareError) => void;
};

/** Events of a {@link Subscription}. */
export type SubscriptionEvents = {
  message: (m: Message) => void;
  discontinuity: (d: Discontinuity) => void;
  state: (state: SubscriptionState, prev: SubscriptionState) => void;
  /** Live (first time) or live again (after a reconnect): where it starts. */
  subscribed: (p: Position & { resumed: boolean; memberId: bigint }) => void;
  presence: (e: PresenceEvent) => void;
  error: (e: FanfareError) => void;
};

const OPEN = 1;
const RETRY_AFTER_MS = 250;
const textEncoder = new TextEncoder();

function toBytes(data: unknown): Uint8Array | null {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (Array.isArray(data)) {
    // `ws` may hand over a fragmented message as a list of buffers.
    const parts = data.map(toBytes);
    if (parts.some((p) => p === null)) return null;
    const out = new Uint8Array(parts.reduce((n, p) => n + (p as Uint8Array).length, 0));
    let at = 0;
    for (const p of parts as Uint8Array[]) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
  return null;
}

function randomKey(random: () => number): string {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  return `${Date.now().toString(36)}-${Math.floor(random() * 2 ** 52).toString(36)}`;
}

/** The `exp` claim of a JWT, in milliseconds, if it has one. */
function tokenExpiry(token: string): number | null {
  const part = token.split('.')[1];
  if (!part) return null;
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const json = JSON.parse(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4))) as { exp?: unknown };
    return typeof json.exp === 'number' ? json.exp * 1000 : null;
  } catch {
    return null;
  }
}

interface PublishJob {
  namespace: string;
  topic: string;
  payload: Uint8Array;
  key: string;
  resolve: (p: Published) => void;
  reject: (e: FanfareError) => void;
  timer: ReturnType<typeof setTimeout>;
}

interface QueryJob {
  namespace: string;
  topic: string;
  members: boolean;
  after: bigint;
  limit: number;
  resolve: (s: PresenceState) => void;
  reject: (e: FanfareError) => void;
  timer: ReturnType<typeof setTimeout>;
}

type Request =
  | { kind: 'publish'; job: PublishJob }
  | { kind: 'query'; job: QueryJob }
  | { kind: 'subscribe'; sub: Subscription }
  | { kind: 'unsubscribe' }
  | { kind: 'refresh' };

/** A subscription to one topic. Made by {@link FanfareClient.subscribe}. */
export class Subscription extends Emitter<SubscriptionEvents> {
  readonly namespace: string;
  readonly topic: string;
  #client: FanfareClient;
  #state: SubscriptionState = 'subscribing';
  #from: From;
  readonly #presence: PresenceOptions | undefined;
  #position: Position | null = null;
  /** The position before a resume, until the server says what happened in between. */
  #resumedFrom: Position | null = null;
  #memberId = 0n;
  /** @internal The server's id for it on the current connection. */
  wire: bigint | null = null;

  /** @internal */
  constructor(client: FanfareClient, namespace: string, topic: string, opts: SubscribeOptions) {
    super();
    this.#client = client;
    this.namespace = namespace;
    this.topic = topic;
    this.#from = opts.from ?? { kind: 'latest' };
    this.#presence = opts.presence;
  }

  /** Its state. */
  get state(): SubscriptionState {
    return this.#state;
  }

  /** Where it is: the epoch and the next sequence it delivers (null before it is live). */
  get position(): Position | null {
    return this.#position ? { ...this.#position } : null;
  }

  /** Its presence member id (0n when it did not enter). */
  get memberId(): bigint {
    return this.#memberId;
  }

  /** Ends it. */
  unsubscribe(): void {
    if (this.#state === 'unsubscribed' || this.#state === 'failed') return;
    this.#client.drop(this);
    this.setState('unsubscribed');
  }

  /** @internal The subscribe request for the current connection. */
  request(requestId: bigint): ClientMsg {
    const p = this.#position;
    const from: From = p ? { kind: 'position', epoch: p.epoch, seq: p.nextSeq } : this.#from;
    this.#resumedFrom = p;
    const m: ClientMsg = { type: 'subscribe', requestId, namespace: this.namespace, topic: this.topic, from };
    if (this.#presence) m.presence = this.#presence;
    return m;
  }

  /** @internal */
  setState(s: SubscriptionState): void {
    const prev = this.#state;
    if (prev === s) return;
    this.#state = s;
    this.emit('state', s, prev);
  }

  /** @internal */
  fail(e: FanfareError): void {
    this.setState('failed');
    this.emit('error', e);
  }

  /** @internal */
  onSubscribed(epoch: bigint, nextSeq: bigint, memberId: bigint): void {
    const resumed = this.#resumedFrom !== null;
    this.#memberId = memberId;
    this.#position = { epoch, nextSeq };
    this.setState('subscribed');
    this.emit('subscribed', { epoch, nextSeq, resumed, memberId });
  }

  /** @internal */
  onDiscontinuity(lastSeq: bigint, newSeq: bigint, newEpoch: bigint): void {
    const before = this.#resumedFrom ?? this.#position;
    this.#resumedFrom = null;
    const lastEpoch = before?.epoch ?? (this.#from.kind === 'position' ? this.#from.epoch : newEpoch);
    this.#position = { epoch: newEpoch, nextSeq: newSeq };
    this.emit('discontinuity', { lastEpoch, lastSeq, newEpoch, newSeq });
  }

  /** @internal */
  onItem(it: Item): void {
    const p = this.#position;
    if (!p) return;
    const from = this.#resumedFrom;
    this.#resumedFrom = null;
    if (from && (from.epoch !== p.epoch || from.nextSeq !== p.nextSeq)) {
      // The server moved us without a word (it always sends one): say it ourselves.
      this.emit('discontinuity', { lastEpoch: from.epoch, lastSeq: from.nextSeq - 1n, newEpoch: p.epoch, newSeq: p.nextSeq });
    }
    if (it.epoch === p.epoch && it.seq < p.nextSeq) return; // already delivered
    if (it.epoch !== p.epoch || it.seq !== p.nextSeq) {
      this.emit('discontinuity', { lastEpoch: p.epoch, lastSeq: p.nextSeq - 1n, newEpoch: it.epoch, newSeq: it.seq });
    }
    this.#position = { epoch: it.epoch, nextSeq: it.seq + 1n };
    const m: Message = { epoch: it.epoch, seq: it.seq, data: it.payload };
    if (it.publisherId !== undefined) m.publisherId = it.publisherId;
    this.emit('message', m);
  }

  /** @internal */
  onPresence(e: PresenceEvent): void {
    this.emit('presence', e);
  }
}

/**
 * A connection to a Fanfare server that stays up: it reconnects with exponential back-off and
 * full jitter, resumes every subscription from its position, retries unanswered publishes
 * with their idempotency key (so they land once), and refreshes its token before it expires.
 */
export class FanfareClient extends Emitter<ClientEvents> {
  readonly #url: string;
  readonly #getToken: (() => Promise<string | null | undefined>) | undefined;
  readonly #Ctor: WebSocketCtor;
  readonly #minDelay: number;
  readonly #maxDelay: number;
  readonly #pingInterval: number;
  readonly #pongTimeout: number;
  readonly #requestTimeout: number;
  readonly #refreshMargin: number;
  readonly #random: () => number;

  #state: ClientState = 'disconnected';
  #wanted = false;
  #ws: WebSocketLike | null = null;
  #welcomed = false;
  #attempt = 0;
  #nextId = 1n;
  #lastReceived = 0;
  #reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  #pingTimer: ReturnType<typeof setInterval> | null = null;
  #refreshTimer: ReturnType<typeof setTimeout> | null = null;
  #subs = new Map<string, Subscription>();
  #byWire = new Map<bigint, Subscription>();
  #requests = new Map<bigint, Request>();
  #publishes = new Set<PublishJob>();
  #queries = new Set<QueryJob>();
  #offline = false;
  #unlisten: (() => void) | null = null;

  constructor(opts: ClientOptions) {
    super();
    this.#url = opts.url;
    this.#getToken = opts.getToken;
    const Ctor = opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketCtor }).WebSocket;
    if (!Ctor) throw new TypeError('no WebSocket implementation: pass options.WebSocket (e.g. from the ws package)');
    this.#Ctor = Ctor;
    this.#minDelay = opts.minReconnectDelayMs ?? 100;
    this.#maxDelay = opts.maxReconnectDelayMs ?? 10_000;
    this.#pingInterval = opts.pingIntervalMs ?? 15_000;
    this.#pongTimeout = opts.pongTimeoutMs ?? 10_000;
    this.#requestTimeout = opts.requestTimeoutMs ?? 10_000;
    this.#refreshMargin = opts.refreshMarginMs ?? 30_000;
    this.#random = opts.random ?? Math.random;
  }

  /** The connection's state. */
  get state(): ClientState {
    return this.#state;
  }

  /** Starts connecting (and keeps the connection up until {@link close}). */
  connect(): void {
    if (this.#state === 'closed') throw new FanfareError('Closed', 'the client was closed');
    if (this.#wanted) return;
    this.#wanted = true;
    this.#listenOnline();
    void this.#open();
  }

  /** Closes for good: pending requests are rejected `Closed`, subscriptions end. */
  close(): void {
    if (this.#state === 'closed') return;
    this.#wanted = false;
    this.#unlisten?.();
    this.#clearTimers();
    const ws = this.#ws;
    this.#ws = null;
    ws?.close(1000, 'client closed');
    const closed = new FanfareError('Closed', 'the client was closed');
    for (const j of this.#publishes) this.#finish(j, closed);
    for (const j of this.#queries) this.#finishQuery(j, closed);
    for (const s of this.#subs.values()) s.setState('unsubscribed');
    this.#subs.clear();
    this.#byWire.clear();
    this.#requests.clear();
    this.#setState('closed');
  }

  /** Publishes `data` (bytes, or text as UTF-8); resolves with its position once ordered. */
  publish(namespace: string, topic: string, data: Uint8Array | string, opts: PublishOptions = {}): Promise<Published> {
    const payload = typeof data === 'string' ? textEncoder.encode(data) : data;
    return new Promise<Published>((resolve, reject) => {
      if (this.#state === 'closed') return reject(new FanfareError('Closed', 'the client was closed'));
      const job: PublishJob = {
        namespace,
        topic,
        payload,
        key: opts.idempotencyKey ?? randomKey(this.#random),
        resolve,
        reject,
        timer: setTimeout(() => this.#finish(job, new FanfareError('Timeout', `publish to ${namespace}/${topic} not answered in time`)), this.#requestTimeout),
      };
      this.#publishes.add(job);
      this.#sendPublish(job);
    });
  }

  /** Subscribes to a topic (one subscription per topic per client). */
  subscribe(namespace: string, topic: string, opts: SubscribeOptions = {}): Subscription {
    if (this.#state === 'closed') throw new FanfareError('Closed', 'the client was closed');
    const key = `${namespace}/${topic}`;
    if (this.#subs.has(key)) throw new FanfareError('AlreadySubscribed', `already subscribed to ${key}`);
    const sub = new Subscription(this, namespace, topic, opts);
    this.#subs.set(key, sub);
    this.#sendSubscribe(sub);
    return sub;
  }

  /** A topic's occupancy and, with `members`, one page of members (needs the presence right). */
  presence(namespace: string, topic: string, opts: { members?: boolean; after?: bigint; limit?: number } = {}): Promise<PresenceState> {
    return new Promise<PresenceState>((resolve, reject) => {
      if (this.#state === 'closed') return reject(new FanfareError('Closed', 'the client was closed'));
      const job: QueryJob = {
        namespace,
        topic,
        members: opts.members ?? true,
        after: opts.after ?? 0n,
        limit: opts.limit ?? 0,
        resolve,
        reject,
        timer: setTimeout(() => this.#finishQuery(job, new FanfareError('Timeout', `presence of ${namespace}/${topic} not answered in time`)), this.#requestTimeout),
      };
      this.#queries.add(job);
      this.#sendQuery(job);
    });
  }

  /** @internal A subscription ends. */
  drop(sub: Subscription): void {
    this.#subs.delete(`${sub.namespace}/${sub.topic}`);
    if (sub.wire !== null) {
      this.#byWire.delete(sub.wire);
      this.#request({ type: 'unsubscribe', requestId: 0n, subscriptionId: sub.wire }, { kind: 'unsubscribe' });
      sub.wire = null;
    }
  }

  // ------------------------------------------------------------------ connection

  #setState(s: ClientState): void {
    const prev = this.#state;
    if (prev === s || prev === 'closed') return;
    this.#state = s;
    this.emit('state', s, prev);
  }

  #error(e: FanfareError): void {
    // Never an unhandled rejection, never a throw into the socket's callbacks.
    if (this.listens('error')) this.emit('error', e);
  }

  async #open(): Promise<void> {
    if (!this.#wanted || this.#ws || this.#offline) return;
    this.#setState('connecting');
    let token: string | undefined;
    if (this.#getToken) {
      try {
        token = (await this.#getToken()) ?? undefined;
      } catch (e) {
        this.#error(new FanfareError('TokenCallbackFailed', `getToken failed: ${String(e)}`));
        this.#setState('disconnected');
        this.#scheduleReconnect();
        return;
      }
      if (!this.#wanted || this.#ws) return;
    }
    let ws: WebSocketLike;
    try {
      ws = new this.#Ctor(this.#url);
    } catch (e) {
      this.#error(new FanfareError('Unavailable', `cannot open ${this.#url}: ${String(e)}`));
      this.#setState('disconnected');
      this.#scheduleReconnect();
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.#ws = ws;
    this.#welcomed = false;
    this.#lastReceived = Date.now();
    ws.onopen = () => {
      if (ws !== this.#ws) return;
      const hello: ClientMsg = { type: 'hello' };
      if (token !== undefined) hello.token = token;
      ws.send(encodeClient(hello));
      this.#scheduleRefresh(token);
    };
    ws.onmessage = (ev) => this.#onData(ws, ev.data);
    ws.onclose = (ev) => this.#onClose(ws, ev.code ?? 1006, ev.reason ?? '');
    ws.onerror = () => {
      /* onclose follows */
    };
  }

  #onClose(ws: WebSocketLike, _code: number, _reason: string): void {
    if (ws !== this.#ws) return;
    this.#ws = null;
    this.#welcomed = false;
    this.#clearTimers();
    this.#byWire.clear();
    this.#requests.clear();
    for (const s of this.#subs.values()) {
      s.wire = null;
      if (s.state === 'subscribed') s.setState('subscribing');
    }
    if (!this.#wanted) return;
    this.#setState('disconnected');
    this.#scheduleReconnect();
  }

  #scheduleReconnect(): void {
    if (!this.#wanted || this.#offline || this.#reconnectTimer) return;
    const ceiling = Math.min(this.#maxDelay, this.#minDelay * 2 ** Math.min(this.#attempt, 30));
    this.#attempt++;
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = null;
      void this.#open();
    }, this.#random() * ceiling);
  }

  #clearTimers(): void {
    for (const t of [this.#reconnectTimer, this.#refreshTimer]) if (t) clearTimeout(t);
    if (this.#pingTimer) clearInterval(this.#pingTimer);
    this.#reconnectTimer = this.#refreshTimer = this.#pingTimer = null;
  }

  /** Drops the connection (a new one follows): dead, or speaking something else. */
  #abandon(why: string): void {
    const ws = this.#ws;
    if (!ws) return;
    this.#onClose(ws, 4000, why);
    try {
      ws.close(4000, why);
    } catch {
      /* already closing */
    }
  }

  #listenOnline(): void {
    const g = globalThis as { addEventListener?: (t: string, f: () => void) => void; removeEventListener?: (t: string, f: () => void) => void };
    if (typeof g.addEventListener !== 'function' || typeof g.removeEventListener !== 'function') return;
    const online = () => {
      this.#offline = false;
      this.#attempt = 0;
      if (this.#reconnectTimer) clearTimeout(this.#reconnectTimer);
      this.#reconnectTimer = null;
      void this.#open();
    };
    const offline = () => {
      this.#offline = true;
      this.#abandon('offline');
    };
    g.addEventListener('online', online);
    g.addEventListener('offline', offline);
    this.#unlisten = () => {
      g.removeEventListener?.('online', online);
      g.removeEventListener?.('offline', offline);
    };
  }

  #onWelcome(): void {
    this.#welcomed = true;
    this.#attempt = 0;
    this.#setState('connected');
    this.#pingTimer = setInterval(() => this.#ping(), this.#pingInterval);
    for (const s of this.#subs.values()) this.#sendSubscribe(s);
    for (const j of this.#publishes) this.#sendPublish(j);
    for (const j of this.#queries) this.#sendQuery(j);
  }

  #ping(): void {
    if (Date.now() - this.#lastReceived > this.#pingInterval + this.#pongTimeout) {
      this.#abandon('no answer to pings');
      return;
    }
    this.#send({ type: 'ping', nonce: BigInt(Date.now()) });
  }

  #scheduleRefresh(token: string | undefined): void {
    if (this.#refreshTimer) clearTimeout(this.#refreshTimer);
    this.#refreshTimer = null;
    if (!token || !this.#getToken) return;
    const exp = tokenExpiry(token);
    if (exp === null) return;
    const wait = Math.max(0, exp - Date.now() - this.#refreshMargin);
    this.#refreshTimer = setTimeout(() => void this.#refresh(), wait);
  }

  async #refresh(): Promise<void> {
    if (!this.#getToken || !this.#ws) return;
    let token: string | null | undefined;
    try {
      token = await this.#getToken();
    } catch (e) {
      this.#error(new FanfareError('TokenCallbackFailed', `getToken failed: ${String(e)}`));
      return;
    }
    if (!token) return;
    this.#request({ type: 'refreshToken', requestId: 0n, token }, { kind: 'refresh' });
    this.#scheduleRefresh(token);
  }

  #send(m: ClientMsg): boolean {
    const ws = this.#ws;
    if (!ws || !this.#welcomed || ws.readyState !== OPEN) return false;
    ws.send(encodeClient(m));
    return true;
  }

  /** Sends a request with a fresh id, remembering what its answer is for. */
  #request(m: ClientMsg & { requestId: bigint }, r: Request): void {
    const id = this.#nextId++;
    m.requestId = id;
    if (this.#send(m)) this.#requests.set(id, r);
  }

  #sendPublish(job: PublishJob): void {
    this.#request(
      { type: 'publish', requestId: 0n, namespace: job.namespace, topic: job.topic, payload: job.payload, idempotencyKey: job.key },
      { kind: 'publish', job },
    );
  }

  #sendQuery(job: QueryJob): void {
    this.#request(
      { type: 'presenceQuery', requestId: 0n, namespace: job.namespace, topic: job.topic, members: job.members, after: job.after, limit: job.limit },
      { kind: 'query', job },
    );
  }

  #sendSubscribe(sub: Subscription): void {
    if (!this.#welcomed) return;
    const id = this.#nextId++;
    if (this.#send(sub.request(id))) this.#requests.set(id, { kind: 'subscribe', sub });
  }

  #finish(job: PublishJob, r: Published | FanfareError): void {
    if (!this.#publishes.delete(job)) return;
    clearTimeout(job.timer);
    if (r instanceof FanfareError) job.reject(r);
    else job.resolve(r);
  }

  #finishQuery(job: QueryJob, r: PresenceState | FanfareError): void {
    if (!this.#queries.delete(job)) return;
    clearTimeout(job.timer);
    if (r instanceof FanfareError) job.reject(r);
    else job.resolve(r);
  }

  /** Tries a request again shortly (the server said it may work later). */
  #retry(f: () => void): void {
    setTimeout(() => {
      if (this.#welcomed) f();
    }, RETRY_AFTER_MS * (0.5 + this.#random()));
  }

  // ------------------------------------------------------------------ messages

  #onData(ws: WebSocketLike, data: unknown): void {
    if (ws !== this.#ws) return;
    this.#lastReceived = Date.now();
    const bytes = toBytes(data);
    let m: ServerMsg;
    try {
      if (!bytes) throw new ProtocolError('a text frame: the protocol is binary');
      m = decodeServer(bytes);
    } catch (e) {
      this.#error(new FanfareError('ProtocolError', String(e)));
      this.#abandon('protocol error');
      return;
    }
    this.#dispatch(m);
  }

  #dispatch(m: ServerMsg): void {
    switch (m.type) {
      case 'welcome':
        this.#onWelcome();
        return;
      case 'publishAck': {
        const r = this.#take(m.requestId);
        if (r?.kind === 'publish') this.#finish(r.job, { epoch: m.epoch, seq: m.seq, durability: m.durability });
        return;
      }
      case 'subscribed': {
        const r = this.#take(m.requestId);
        if (r?.kind !== 'subscribe' || !this.#subs.has(`${r.sub.namespace}/${r.sub.topic}`)) {
          // Unsubscribed meanwhile: end it on the server too.
          this.#request({ type: 'unsubscribe', requestId: 0n, subscriptionId: m.subscriptionId }, { kind: 'unsubscribe' });
          return;
        }
        r.sub.wire = m.subscriptionId;
        this.#byWire.set(m.subscriptionId, r.sub);
        r.sub.onSubscribed(m.epoch, m.nextSeq, m.memberId);
        return;
      }
      case 'items':
        for (const it of m.items) this.#byWire.get(it.subscriptionId)?.onItem(it);
        return;
      case 'discontinuity':
        this.#byWire.get(m.subscriptionId)?.onDiscontinuity(m.lastSeq, m.newSeq, m.newEpoch);
        return;
      case 'subscriptionClosed': {
        const sub = this.#byWire.get(m.subscriptionId);
        if (!sub) return;
        this.#byWire.delete(m.subscriptionId);
        sub.wire = null;
        const e = new FanfareError(codeName(m.code), m.text);
        if (e.retryable) {
          // Too slow, or the server is going: ask again from where it is.
          sub.setState('subscribing');
          this.#retry(() => this.#sendSubscribe(sub));
        } else {
          this.#subs.delete(`${sub.namespace}/${sub.topic}`);
          sub.fail(e);
        }
        return;
      }
      case 'presenceEvent':
        this.#byWire.get(m.subscriptionId)?.onPresence(m.event);
        return;
      case 'presenceState': {
        const r = this.#take(m.requestId);
        if (r?.kind === 'query') this.#finishQuery(r.job, m.state);
        return;
      }
      case 'tokenRefreshed':
        this.#take(m.requestId);
        return;
      case 'error':
        this.#onError(m.requestId, m.code, m.text);
        return;
      case 'heartbeat':
      case 'pong':
      case 'unsubscribed':
        return;
    }
  }

  #take(id: bigint): Request | undefined {
    const r = this.#requests.get(id);
    this.#requests.delete(id);
    return r;
  }

  #onError(requestId: bigint, code: number, text: string): void {
    const e = new FanfareError(codeName(code), text);
    const r = requestId === 0n ? undefined : this.#take(requestId);
    if (!r) {
      if (e.code === 'TokenExpired') void this.#refresh();
      this.#error(e);
      return;
    }
    switch (r.kind) {
      case 'publish':
        if (e.retryable) this.#retry(() => this.#publishes.has(r.job) && this.#sendPublish(r.job));
        else this.#finish(r.job, e);
        return;
      case 'query':
        if (e.retryable) this.#retry(() => this.#queries.has(r.job) && this.#sendQuery(r.job));
        else this.#finishQuery(r.job, e);
        return;
      case 'subscribe':
        if (e.retryable) {
          this.#retry(() => this.#subs.has(`${r.sub.namespace}/${r.sub.topic}`) && this.#sendSubscribe(r.sub));
        } else {
          this.#subs.delete(`${r.sub.namespace}/${r.sub.topic}`);
          r.sub.fail(e);
        }
        return;
      case 'refresh':
      case 'unsubscribe':
        this.#error(e);
        return;
    }
  }
}
