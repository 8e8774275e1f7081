// Errors, typed by the protocol's error codes (docs/protocol.md, "Errors").

import { ErrorCode as WireCode } from './generated/fanfare/wire/error-code.js';

/** A protocol error code's name, or one of the client's own. */
export type ErrorCodeName =
  | 'Unknown'
  | 'BadRequest'
  | 'InvalidName'
  | 'MessageTooLarge'
  | 'TooManySubscriptions'
  | 'UnknownSubscription'
  | 'AlreadySubscribed'
  | 'TopicLimit'
  | 'Overloaded'
  | 'Unauthorized'
  | 'Forbidden'
  | 'TokenExpired'
  | 'UnsupportedVersion'
  | 'ShuttingDown'
  | 'InvalidResume'
  | 'RateLimited'
  | 'Unavailable'
  /** The topic's owner could not store the message (its disk failed): not published. */
  | 'StorageUnavailable'
  /** The request was not answered within `requestTimeoutMs`. */
  | 'Timeout'
  /** The client was closed before the request was answered. */
  | 'Closed'
  /** The server sent bytes that are not protocol v1. */
  | 'ProtocolError'
  /** The application's `getToken` failed. */
  | 'TokenCallbackFailed';

const NAMES: Record<number, ErrorCodeName> = {
  [WireCode.Unknown]: 'Unknown',
  [WireCode.BadRequest]: 'BadRequest',
  [WireCode.InvalidName]: 'InvalidName',
  [WireCode.MessageTooLarge]: 'MessageTooLarge',
  [WireCode.TooManySubscriptions]: 'TooManySubscriptions',
  [WireCode.UnknownSubscription]: 'UnknownSubscription',
  [WireCode.AlreadySubscribed]: 'AlreadySubscribed',
  [WireCode.TopicLimit]: 'TopicLimit',
  [WireCode.Overloaded]: 'Overloaded',
  [WireCode.Unauthorized]: 'Unauthorized',
  [WireCode.Forbidden]: 'Forbidden',
  [WireCode.TokenExpired]: 'TokenExpired',
  [WireCode.UnsupportedVersion]: 'UnsupportedVersion',
  [WireCode.ShuttingDown]: 'ShuttingDown',
  [WireCode.InvalidResume]: 'InvalidResume',
  [WireCode.RateLimited]: 'RateLimited',
  [WireCode.Unavailable]: 'Unavailable',
  [WireCode.StorageUnavailable]: 'StorageUnavailable',
};

/** The name of a wire error code (`Unknown` for codes this client does not know). */
export function codeName(code: number): ErrorCodeName {
  return NAMES[code] ?? 'Unknown';
}

/** An error from the server (by its protocol code) or from the client itself. */
export class FanfareError extends Error {
  /** What went wrong, by name. */
  readonly code: ErrorCodeName;

  constructor(code: ErrorCodeName, message: string) {
    super(message);
    this.name = 'FanfareError';
    this.code = code;
  }

  /** Whether retrying the same request later can succeed (the client retries these itself). */
  get retryable(): boolean {
    return (
      this.code === 'Unavailable' ||
      this.code === 'ShuttingDown' ||
      this.code === 'Overloaded' ||
      this.code === 'Timeout'
    );
  }
}
