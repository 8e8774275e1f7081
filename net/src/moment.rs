//! [`Moment`]: a point in time in 8 bytes (an `Instant` takes 16, and an `Option<Instant>` as
//! much), for state every connection keeps: what idle connections cost is mostly such fields.

use std::num::NonZeroU64;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The process's reference point for [`Moment`]s (taken the first time one is made).
static EPOCH: OnceLock<Instant> = OnceLock::new();

fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// A point in time, to the microsecond, as microseconds since a process-wide reference point
/// (plus one, so `Option<Moment>` is 8 bytes too). Moments before the reference point read as
/// the reference point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Moment(NonZeroU64);

impl Moment {
    /// Now.
    pub(crate) fn now() -> Self {
        Instant::now().into()
    }

    /// The moment as an `Instant`.
    pub(crate) fn instant(self) -> Instant {
        epoch() + Duration::from_micros(self.0.get() - 1)
    }

    /// Time from this moment to `now` (zero if `now` is earlier).
    pub(crate) fn until(self, now: Instant) -> Duration {
        now.saturating_duration_since(self.instant())
    }
}

impl From<Instant> for Moment {
    fn from(i: Instant) -> Self {
        let us = i.saturating_duration_since(epoch()).as_micros();
        let us = u64::try_from(us).unwrap_or(u64::MAX - 1);
        // `us + 1` is at least 1 and at most u64::MAX.
        Moment(NonZeroU64::MIN.saturating_add(us))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moment_round_trips_to_the_microsecond_and_options_stay_small() {
        let first = Moment::now(); // sets the reference point
        let now = Instant::now();
        let m = Moment::from(now);
        assert!(m >= first);
        let back = m.instant();
        assert!(back <= now && now - back < Duration::from_micros(1));
        let later = Moment::from(now + Duration::from_millis(1500));
        assert!(later > m);
        assert_eq!(m.until(now + Duration::from_secs(2)).as_millis(), 2000);
        assert_eq!(later.until(now), Duration::ZERO);
        assert_eq!(std::mem::size_of::<Option<Moment>>(), 8);
        // Before the reference point: the reference point.
        let early = now.checked_sub(Duration::from_secs(3600)).map(Moment::from);
        if let Some(e) = early {
            assert!(e <= Moment::from(epoch()));
        }
    }
}
