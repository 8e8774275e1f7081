//! The encoding slots of a [`fanfare_core::Delivery`]: one per wire encoding, all named here
//! so no two encodings can share one (a slot past `ENCODINGS` fails the build).

use fanfare_core::EncodingSlot;

/// WebSocket binary frames of `ServerMessage`s.
pub(crate) const WS: EncodingSlot = EncodingSlot::new(0);
/// Length-prefixed `ServerMessage`s (HTTP frame streams).
pub(crate) const FRAMES: EncodingSlot = EncodingSlot::new(1);
/// Server-Sent Events.
pub(crate) const SSE: EncodingSlot = EncodingSlot::new(2);
/// Node-link item frames (storage side of a cluster link).
pub(crate) const LINK: EncodingSlot = EncodingSlot::new(3);
