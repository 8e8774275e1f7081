// @fanfare/client: the Fanfare protocol v1 over WebSocket, for browsers and Node.
export {
  FanfareClient,
  Subscription,
  type ClientEvents,
  type ClientOptions,
  type ClientState,
  type Discontinuity,
  type Message,
  type Position,
  type PublishOptions,
  type Published,
  type SubscribeOptions,
  type SubscriptionEvents,
  type SubscriptionState,
  type WebSocketCtor,
  type WebSocketLike,
} from './client.js';
export {
  decodeServer,
  encodeClient,
  ProtocolError,
  PROTOCOL_VERSION,
  type ClientMsg,
  type From,
  type Item,
  type Member,
  type PresenceAction,
  type PresenceEvent,
  type PresenceOptions,
  type PresenceState,
  type ServerMsg,
} from './codec.js';
export { codeName, FanfareError, type ErrorCodeName } from './errors.js';
