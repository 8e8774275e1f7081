//! Where a subscriber starts: the owner's answer to a subscribe, catch-up or fetch, and the
//! rule that computes it from a topic's epoch, head and history ([`resolve_start`]).

use fanfare_proto::Start;

use crate::cluster::Replay;
use crate::ids::{Epoch, Seq};
use crate::message::{Message, SubscribeError};

/// Messages a subscriber will never get: after `last_seq` up to `new_seq - 1` (in `new_epoch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gap {
    pub last_seq: Seq,
    pub new_seq: Seq,
    pub new_epoch: Epoch,
}

/// What the owner answers a subscribe (or catch-up) with.
#[derive(Debug)]
pub(crate) struct OwnerReply {
    /// The topic's epoch.
    pub epoch: Epoch,
    /// The first sequence the subscriber will get.
    pub start: Seq,
    /// Set when the requested position is lost.
    pub disc: Option<Gap>,
    /// History from `start` on.
    pub replay: Vec<Message>,
    /// `replay` is one page read from disk: more follows, ask again from where it ends.
    pub more: bool,
}

impl From<OwnerReply> for Replay {
    fn from(r: OwnerReply) -> Self {
        Replay {
            epoch: r.epoch,
            start: r.start,
            gap: r.disc.map(|g| (g.last_seq, g.new_seq, g.new_epoch)),
            items: r.replay,
            more: r.more,
        }
    }
}

impl From<Replay> for OwnerReply {
    fn from(r: Replay) -> Self {
        OwnerReply {
            epoch: r.epoch,
            start: r.start,
            disc: r.gap.map(|(last_seq, new_seq, new_epoch)| Gap {
                last_seq,
                new_seq,
                new_epoch,
            }),
            replay: r.items,
            more: r.more,
        }
    }
}

/// Where a subscription starting at `start` begins, given the topic's `epoch`, `next` sequence
/// and oldest sequence in history: `(discontinuity, first sequence to deliver)`.
pub(crate) fn resolve_start(
    epoch: Epoch,
    next: Seq,
    first_in_history: Option<Seq>,
    start: Start,
) -> Result<(Option<Gap>, Seq), SubscribeError> {
    let available = first_in_history.unwrap_or(next);
    debug_assert!(available <= next);
    match start {
        Start::Latest => Ok((None, next)),
        Start::LastN(n) => Ok((
            None,
            Seq(next.0.saturating_sub(u64::from(n)).max(available.0)),
        )),
        Start::At { epoch: e, seq } => {
            let seq = Seq(seq.max(1));
            if Epoch(e) != epoch {
                // Another epoch: nothing the subscriber saw can be continued. Everything this
                // epoch still has follows the discontinuity.
                return Ok((
                    Some(Gap {
                        last_seq: Seq(seq.0 - 1),
                        new_seq: available,
                        new_epoch: epoch,
                    }),
                    available,
                ));
            }
            if seq > next {
                return Err(SubscribeError::InvalidResume {
                    requested: seq,
                    next,
                });
            }
            if seq >= available {
                Ok((None, seq))
            } else {
                Ok((
                    Some(Gap {
                        last_seq: Seq(seq.0 - 1),
                        new_seq: available,
                        new_epoch: epoch,
                    }),
                    available,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: Epoch = Epoch(7);

    #[test]
    fn resolve_latest_and_last_n() {
        assert_eq!(
            resolve_start(E, Seq(10), Some(Seq(5)), Start::Latest),
            Ok((None, Seq(10)))
        );
        assert_eq!(
            resolve_start(E, Seq(10), Some(Seq(5)), Start::LastN(3)),
            Ok((None, Seq(7)))
        );
        assert_eq!(
            resolve_start(E, Seq(10), Some(Seq(5)), Start::LastN(30)),
            Ok((None, Seq(5)))
        );
        assert_eq!(
            resolve_start(E, Seq(1), None, Start::LastN(30)),
            Ok((None, Seq(1)))
        );
    }

    #[test]
    fn resolve_positions() {
        let at = |e, s| Start::At { epoch: e, seq: s };
        // Inside history: gapless.
        assert_eq!(
            resolve_start(E, Seq(10), Some(Seq(5)), at(7, 6)),
            Ok((None, Seq(6)))
        );
        // At the head: nothing to replay.
        assert_eq!(
            resolve_start(E, Seq(10), Some(Seq(5)), at(7, 10)),
            Ok((None, Seq(10)))
        );
        // Before history: one discontinuity, then what is left.
        assert_eq!(
            resolve_start(E, Seq(10), Some(Seq(5)), at(7, 2)),
            Ok((
                Some(Gap {
                    last_seq: Seq(1),
                    new_seq: Seq(5),
                    new_epoch: E
                }),
                Seq(5)
            ))
        );
        // Another epoch: discontinuity into this one.
        assert_eq!(
            resolve_start(E, Seq(10), Some(Seq(5)), at(6, 9)),
            Ok((
                Some(Gap {
                    last_seq: Seq(8),
                    new_seq: Seq(5),
                    new_epoch: E
                }),
                Seq(5)
            ))
        );
        // Ahead of the head.
        assert!(resolve_start(E, Seq(10), Some(Seq(5)), at(7, 11)).is_err());
        // Empty history after expiry.
        assert_eq!(
            resolve_start(E, Seq(10), None, at(7, 3)),
            Ok((
                Some(Gap {
                    last_seq: Seq(2),
                    new_seq: Seq(10),
                    new_epoch: E
                }),
                Seq(10)
            ))
        );
    }
}
