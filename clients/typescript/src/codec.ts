// Protocol v1 messages as plain TypeScript values, and their flatbuffers encoding (the code in
// ./generated comes from proto/schema/fanfare.fbs through proto/regen.sh: never edit it).

import * as flatbuffers from 'flatbuffers';
import { ClientBody } from './generated/fanfare/wire/client-body.js';
import { Durability as WireDurability } from './generated/fanfare/wire/durability.js';
import { ClientMessage } from './generated/fanfare/wire/client-message.js';
import { Discontinuity } from './generated/fanfare/wire/discontinuity.js';
import { Error as WireError } from './generated/fanfare/wire/error.js';
import { From as WireFrom } from './generated/fanfare/wire/from.js';
import { FromLastN } from './generated/fanfare/wire/from-last-n.js';
import { FromLatest } from './generated/fanfare/wire/from-latest.js';
import { FromPosition } from './generated/fanfare/wire/from-position.js';
import { Heartbeat } from './generated/fanfare/wire/heartbeat.js';
import { Hello } from './generated/fanfare/wire/hello.js';
import { Item as WireItem } from './generated/fanfare/wire/item.js';
import { ItemBatch } from './generated/fanfare/wire/item-batch.js';
import { Member as WireMember } from './generated/fanfare/wire/member.js';
import { Ping } from './generated/fanfare/wire/ping.js';
import { Pong } from './generated/fanfare/wire/pong.js';
import { PresenceAction as WireAction } from './generated/fanfare/wire/presence-action.js';
import { PresenceEvent as WirePresenceEvent } from './generated/fanfare/wire/presence-event.js';
import { PresenceOptions as WirePresenceOptions } from './generated/fanfare/wire/presence-options.js';
import { PresenceQuery } from './generated/fanfare/wire/presence-query.js';
import { PresenceState as WirePresenceState } from './generated/fanfare/wire/presence-state.js';
import { Publish } from './generated/fanfare/wire/publish.js';
import { PublishAck } from './generated/fanfare/wire/publish-ack.js';
import { RefreshToken } from './generated/fanfare/wire/refresh-token.js';
import { ServerBody } from './generated/fanfare/wire/server-body.js';
import { ServerMessage } from './generated/fanfare/wire/server-message.js';
import { Subscribe } from './generated/fanfare/wire/subscribe.js';
import { Subscribed } from './generated/fanfare/wire/subscribed.js';
import { SubscriptionClosed } from './generated/fanfare/wire/subscription-closed.js';
import { TokenRefreshed } from './generated/fanfare/wire/token-refreshed.js';
import { Unsubscribe } from './generated/fanfare/wire/unsubscribe.js';
import { Unsubscribed } from './generated/fanfare/wire/unsubscribed.js';
import { Welcome } from './generated/fanfare/wire/welcome.js';

/** The protocol version this client speaks. */

/** How the broker kept a publish when it acknowledged it: `memory` (no data dir), `written`
 * (in the owner's log, not synced), `synced` (on stable storage). Older servers: `memory`. */
export type Durability = 'memory' | 'written' | 'synced';

function durabilityName(d: WireDurability): Durability {
  switch (d) {
    case WireDurability.Synced:
      return 'synced';
    case WireDurability.Written:
      return 'written';
    default:
      return 'memory';
  }
}

export const PROTOCOL_VERSION = 1;

/** Where a subscription starts. */
export type From =
  | { kind: 'latest' }
  | { kind: 'position'; epoch: bigint; seq: bigint }
  | { kind: 'lastN'; count: number };

/** A subscription's presence options (docs/protocol.md, "Presence and occupancy"). */
export interface PresenceOptions {
  /** Be listed as a member while subscribed. */
  enter?: boolean;
  /** The member's own blob (at most the server's `presence_info_bytes_max`, 1 KiB). */
  info?: Uint8Array;
  /** The identity to list, with authentication off only (else the token's `sub`). */
  clientId?: string;
  /** Receive join, leave and overflow events (needs the presence right). */
  memberEvents?: boolean;
  /** Receive occupancy events. */
  occupancyEvents?: boolean;
}

/** What a client sends. */
export type ClientMsg =
  | { type: 'hello'; token?: string }
  | {
      type: 'publish';
      requestId: bigint;
      namespace: string;
      topic: string;
      payload: Uint8Array;
      idempotencyKey?: string;
    }
  | {
      type: 'subscribe';
      requestId: bigint;
      namespace: string;
      topic: string;
      from: From;
      presence?: PresenceOptions;
    }
  | { type: 'unsubscribe'; requestId: bigint; subscriptionId: bigint }
  | { type: 'ping'; nonce: bigint }
  | { type: 'refreshToken'; requestId: bigint; token: string }
  | {
      type: 'presenceQuery';
      requestId: bigint;
      namespace: string;
      topic: string;
      members: boolean;
      after: bigint;
      limit: number;
    };

/** One delivered message. */
export interface Item {
  subscriptionId: bigint;
  epoch: bigint;
  seq: bigint;
  payload: Uint8Array;
  publisherId?: string;
}

/** A presence member. */
export interface Member {
  memberId: bigint;
  clientId: string;
  info: Uint8Array;
}

/** What a presence event says. */
export type PresenceAction = 'join' | 'leave' | 'occupancy' | 'refused' | 'overflow';

/** A presence event. */
export interface PresenceEvent {
  action: PresenceAction;
  member?: Member;
  occupancy: bigint;
  skipped: bigint;
}

/** A page of a topic's presence. */
export interface PresenceState {
  occupancy: bigint;
  membersTotal: bigint;
  members: Member[];
  /** 0n on the last page, else the `after` of the next. */
  nextAfter: bigint;
}

/** What the server sends. */
export type ServerMsg =
  | { type: 'welcome'; version: number; heartbeatIntervalMs: number; maxMessageBytes: number }
  | { type: 'publishAck'; requestId: bigint; epoch: bigint; seq: bigint; durability: Durability }
  | {
      type: 'subscribed';
      requestId: bigint;
      subscriptionId: bigint;
      epoch: bigint;
      nextSeq: bigint;
      memberId: bigint;
    }
  | { type: 'unsubscribed'; requestId: bigint; subscriptionId: bigint }
  | { type: 'items'; items: Item[] }
  | {
      type: 'discontinuity';
      subscriptionId: bigint;
      lastSeq: bigint;
      newSeq: bigint;
      newEpoch: bigint;
    }
  | { type: 'heartbeat'; subscriptionId: bigint; epoch: bigint; nextSeq: bigint }
  | { type: 'error'; requestId: bigint; code: number; text: string }
  | { type: 'pong'; nonce: bigint }
  | { type: 'subscriptionClosed'; subscriptionId: bigint; code: number; text: string }
  | { type: 'tokenRefreshed'; requestId: bigint; expiresAt: bigint }
  | { type: 'presenceEvent'; subscriptionId: bigint; event: PresenceEvent }
  | { type: 'presenceState'; requestId: bigint; state: PresenceState };

/** Bytes the server sent that are not a protocol v1 message. */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

function encodeFrom(b: flatbuffers.Builder, from: From): [WireFrom, flatbuffers.Offset] {
  switch (from.kind) {
    case 'latest':
      return [WireFrom.FromLatest, FromLatest.createFromLatest(b)];
    case 'position':
      return [WireFrom.FromPosition, FromPosition.createFromPosition(b, from.epoch, from.seq)];
    case 'lastN':
      return [WireFrom.FromLastN, FromLastN.createFromLastN(b, from.count)];
  }
}

function encodePresence(b: flatbuffers.Builder, p: PresenceOptions): flatbuffers.Offset {
  const info = p.info && p.info.length > 0 ? WirePresenceOptions.createInfoVector(b, p.info) : 0;
  const clientId = p.clientId !== undefined ? b.createString(p.clientId) : 0;
  WirePresenceOptions.startPresenceOptions(b);
  WirePresenceOptions.addEnter(b, p.enter ?? false);
  if (info) WirePresenceOptions.addInfo(b, info);
  if (clientId) WirePresenceOptions.addClientId(b, clientId);
  WirePresenceOptions.addMemberEvents(b, p.memberEvents ?? false);
  WirePresenceOptions.addOccupancyEvents(b, p.occupancyEvents ?? false);
  return WirePresenceOptions.endPresenceOptions(b);
}

/** Encodes a client message. */
export function encodeClient(m: ClientMsg): Uint8Array {
  const b = new flatbuffers.Builder(128);
  let ty: ClientBody;
  let body: flatbuffers.Offset;
  switch (m.type) {
    case 'hello': {
      const token = m.token !== undefined ? b.createString(m.token) : 0;
      Hello.startHello(b);
      Hello.addVersionMin(b, PROTOCOL_VERSION);
      Hello.addVersionMax(b, PROTOCOL_VERSION);
      if (token) Hello.addToken(b, token);
      [ty, body] = [ClientBody.Hello, Hello.endHello(b)];
      break;
    }
    case 'publish': {
      const ns = b.createString(m.namespace);
      const topic = b.createString(m.topic);
      const payload = m.payload.length > 0 ? Publish.createPayloadVector(b, m.payload) : 0;
      const key = m.idempotencyKey !== undefined ? b.createString(m.idempotencyKey) : 0;
      Publish.startPublish(b);
      Publish.addRequestId(b, m.requestId);
      Publish.addNamespace(b, ns);
      Publish.addTopic(b, topic);
      if (payload) Publish.addPayload(b, payload);
      if (key) Publish.addIdempotencyKey(b, key);
      [ty, body] = [ClientBody.Publish, Publish.endPublish(b)];
      break;
    }
    case 'subscribe': {
      const ns = b.createString(m.namespace);
      const topic = b.createString(m.topic);
      const [fromType, from] = encodeFrom(b, m.from);
      const presence = m.presence ? encodePresence(b, m.presence) : 0;
      Subscribe.startSubscribe(b);
      Subscribe.addRequestId(b, m.requestId);
      Subscribe.addNamespace(b, ns);
      Subscribe.addTopic(b, topic);
      Subscribe.addFromType(b, fromType);
      Subscribe.addFrom(b, from);
      if (presence) Subscribe.addPresence(b, presence);
      [ty, body] = [ClientBody.Subscribe, Subscribe.endSubscribe(b)];
      break;
    }
    case 'unsubscribe':
      [ty, body] = [
        ClientBody.Unsubscribe,
        Unsubscribe.createUnsubscribe(b, m.requestId, m.subscriptionId),
      ];
      break;
    case 'ping':
      [ty, body] = [ClientBody.Ping, Ping.createPing(b, m.nonce)];
      break;
    case 'refreshToken': {
      const token = b.createString(m.token);
      [ty, body] = [ClientBody.RefreshToken, RefreshToken.createRefreshToken(b, m.requestId, token)];
      break;
    }
    case 'presenceQuery': {
      const ns = b.createString(m.namespace);
      const topic = b.createString(m.topic);
      [ty, body] = [
        ClientBody.PresenceQuery,
        PresenceQuery.createPresenceQuery(b, m.requestId, ns, topic, m.members, m.after, m.limit),
      ];
      break;
    }
  }
  b.finish(ClientMessage.createClientMessage(b, ty, body));
  return b.asUint8Array();
}

const ACTIONS: Record<number, PresenceAction> = {
  [WireAction.Join]: 'join',
  [WireAction.Leave]: 'leave',
  [WireAction.Occupancy]: 'occupancy',
  [WireAction.Refused]: 'refused',
  [WireAction.Overflow]: 'overflow',
};

function member(m: WireMember): Member {
  return {
    memberId: m.memberId(),
    clientId: m.clientId() ?? '',
    info: m.infoArray()?.slice() ?? new Uint8Array(),
  };
}

function item(i: WireItem): Item {
  const out: Item = {
    subscriptionId: i.subscriptionId(),
    epoch: i.epoch(),
    seq: i.seq(),
    // A copy: the frame's buffer is not ours to keep.
    payload: i.payloadArray()?.slice() ?? new Uint8Array(),
  };
  const p = i.publisherId();
  if (p !== null) out.publisherId = p;
  return out;
}

function required<T>(v: T | null, what: string): T {
  if (v === null) throw new ProtocolError(`${what} missing`);
  return v;
}

/**
 * Decodes a server message. Throws {@link ProtocolError} for bytes that are not one (the
 * TypeScript flatbuffers runtime has no verifier, so reads past the buffer are caught too).
 */
export function decodeServer(bytes: Uint8Array): ServerMsg {
  try {
    return decodeUnchecked(bytes);
  } catch (e) {
    if (e instanceof ProtocolError) throw e;
    throw new ProtocolError(`malformed server message: ${String(e)}`);
  }
}

function decodeUnchecked(bytes: Uint8Array): ServerMsg {
  if (bytes.length < 8) throw new ProtocolError('server message too short');
  const m = ServerMessage.getRootAsServerMessage(new flatbuffers.ByteBuffer(bytes));
  switch (m.bodyType()) {
    case ServerBody.Welcome: {
      const w = required(m.body(new Welcome()) as Welcome | null, 'body');
      return {
        type: 'welcome',
        version: w.version(),
        heartbeatIntervalMs: w.heartbeatIntervalMs(),
        maxMessageBytes: w.maxMessageBytes(),
      };
    }
    case ServerBody.PublishAck: {
      const a = required(m.body(new PublishAck()) as PublishAck | null, 'body');
      return { type: 'publishAck', requestId: a.requestId(), epoch: a.epoch(), seq: a.seq(), durability: durabilityName(a.durability()) };
    }
    case ServerBody.Subscribed: {
      const s = required(m.body(new Subscribed()) as Subscribed | null, 'body');
      return {
        type: 'subscribed',
        requestId: s.requestId(),
        subscriptionId: s.subscriptionId(),
        epoch: s.epoch(),
        nextSeq: s.nextSeq(),
        memberId: s.memberId(),
      };
    }
    case ServerBody.Unsubscribed: {
      const u = required(m.body(new Unsubscribed()) as Unsubscribed | null, 'body');
      return { type: 'unsubscribed', requestId: u.requestId(), subscriptionId: u.subscriptionId() };
    }
    case ServerBody.Item:
      return { type: 'items', items: [item(required(m.body(new WireItem()) as WireItem | null, 'body'))] };
    case ServerBody.ItemBatch: {
      const batch = required(m.body(new ItemBatch()) as ItemBatch | null, 'body');
      const items: Item[] = [];
      for (let i = 0; i < batch.itemsLength(); i++) {
        items.push(item(required(batch.items(i), 'item')));
      }
      return { type: 'items', items };
    }
    case ServerBody.Discontinuity: {
      const d = required(m.body(new Discontinuity()) as Discontinuity | null, 'body');
      return {
        type: 'discontinuity',
        subscriptionId: d.subscriptionId(),
        lastSeq: d.lastSeq(),
        newSeq: d.newSeq(),
        newEpoch: d.newEpoch(),
      };
    }
    case ServerBody.Heartbeat: {
      const h = required(m.body(new Heartbeat()) as Heartbeat | null, 'body');
      return { type: 'heartbeat', subscriptionId: h.subscriptionId(), epoch: h.epoch(), nextSeq: h.nextSeq() };
    }
    case ServerBody.Error: {
      const e = required(m.body(new WireError()) as WireError | null, 'body');
      return { type: 'error', requestId: e.requestId(), code: e.code(), text: e.text() ?? '' };
    }
    case ServerBody.Pong: {
      const p = required(m.body(new Pong()) as Pong | null, 'body');
      return { type: 'pong', nonce: p.nonce() };
    }
    case ServerBody.SubscriptionClosed: {
      const c = required(m.body(new SubscriptionClosed()) as SubscriptionClosed | null, 'body');
      return { type: 'subscriptionClosed', subscriptionId: c.subscriptionId(), code: c.code(), text: c.text() ?? '' };
    }
    case ServerBody.TokenRefreshed: {
      const t = required(m.body(new TokenRefreshed()) as TokenRefreshed | null, 'body');
      return { type: 'tokenRefreshed', requestId: t.requestId(), expiresAt: t.expiresAt() };
    }
    case ServerBody.PresenceEvent: {
      const e = required(m.body(new WirePresenceEvent()) as WirePresenceEvent | null, 'body');
      const action = ACTIONS[e.action()];
      if (action === undefined) throw new ProtocolError(`unknown presence action ${e.action()}`);
      const ev: PresenceEvent = { action, occupancy: e.occupancy(), skipped: e.skipped() };
      const mem = e.member();
      if (mem !== null) ev.member = member(mem);
      return { type: 'presenceEvent', subscriptionId: e.subscriptionId(), event: ev };
    }
    case ServerBody.PresenceState: {
      const p = required(m.body(new WirePresenceState()) as WirePresenceState | null, 'body');
      const members: Member[] = [];
      for (let i = 0; i < p.membersLength(); i++) members.push(member(required(p.members(i), 'member')));
      return {
        type: 'presenceState',
        requestId: p.requestId(),
        state: { occupancy: p.occupancy(), membersTotal: p.membersTotal(), members, nextAfter: p.nextAfter() },
      };
    }
    default:
      throw new ProtocolError(`unknown server message type ${m.bodyType()}`);
  }
}
