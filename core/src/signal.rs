//! A one-shot, shard-local signal: the shutdown word every connection and loop of a shard
//! waits on beside its own work.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// A one-shot, shard-local signal (shutdown). Each waiting future owns one slot, so a future
/// polled a million times holds one waker, not a million (glommio counts waker clones in an
/// `i16`; piling them up overflowed it and panicked the shard).
#[derive(Default)]
pub(crate) struct Signal {
    fired: Cell<bool>,
    slots: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl Signal {
    pub(crate) fn fire(&self) {
        self.fired.set(true);
        let wakers: Vec<Waker> = self
            .slots
            .borrow_mut()
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for w in wakers {
            w.wake();
        }
    }

    /// Registers (or refreshes) the waker of the future holding `slot`.
    fn register(&self, slot: &mut Option<usize>, waker: &Waker) {
        let mut slots = self.slots.borrow_mut();
        let i = match *slot {
            Some(i) => i,
            None => {
                // Free indices past the end were cut off by `release`: skipped here, and
                // none is left when the table grows again (it grows only when `free` is empty).
                let mut free = self.free.borrow_mut();
                let reused = std::iter::from_fn(|| free.pop()).find(|&i| i < slots.len());
                let i = match reused {
                    Some(i) => i,
                    None => {
                        slots.push(None);
                        slots.len() - 1
                    }
                };
                *slot = Some(i);
                i
            }
        };
        match &mut slots[i] {
            Some(w) if w.will_wake(waker) => {}
            s => *s = Some(waker.clone()),
        }
    }

    fn release(&self, slot: usize) {
        let mut slots = self.slots.borrow_mut();
        if let Some(s) = slots.get_mut(slot) {
            *s = None;
            self.free.borrow_mut().push(slot);
        }
        // A storm of connections leaves a long table behind: its free tail is cut off (those
        // indices stay in `free` and are skipped when popped), and the memory given back once
        // it is mostly unused.
        if slot + 1 == slots.len() {
            while slots.last().is_some_and(Option::is_none) {
                slots.pop();
            }
            if slots.capacity() > 64 && slots.len() * 4 < slots.capacity() {
                let n = slots.len() * 2;
                slots.shrink_to(n);
                let mut free = self.free.borrow_mut();
                free.retain(|&i| i < slots.len());
                let n = free.len() * 2;
                free.shrink_to(n);
            }
        }
    }

    /// Wakers held now (tests).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.slots.borrow().iter().filter(|s| s.is_some()).count()
    }
}

/// Resolves when its [`Signal`] fires.
pub(crate) struct SignalWait {
    signal: Rc<Signal>,
    slot: Option<usize>,
}

impl Future for SignalWait {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.fired.get() {
            return Poll::Ready(());
        }
        let this = &mut *self;
        this.signal.register(&mut this.slot, cx.waker());
        Poll::Pending
    }
}

impl Drop for SignalWait {
    fn drop(&mut self) {
        if let Some(i) = self.slot.take() {
            self.signal.release(i);
        }
    }
}

impl SignalWait {
    /// A future that resolves once `signal` fires.
    pub(crate) fn new(signal: Rc<Signal>) -> Self {
        Self { signal, slot: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: every poll of the shutdown future used to push a waker clone, and a
    /// connection's read loop polls it once per message; glommio's i16 waker count overflowed
    /// after 32,767 messages and panicked the shard.
    #[test]
    fn a_signal_future_polled_many_times_holds_one_waker() {
        let signal = Rc::new(Signal::default());
        let waker = futures_lite::future::block_on(std::future::poll_fn(|cx| {
            Poll::Ready(cx.waker().clone())
        }));
        let mut cx = Context::from_waker(&waker);
        let mut a = Box::pin(SignalWait::new(signal.clone()));
        let mut b = Box::pin(SignalWait::new(signal.clone()));
        for _ in 0..100_000 {
            assert!(a.as_mut().poll(&mut cx).is_pending());
        }
        assert!(b.as_mut().poll(&mut cx).is_pending());
        assert_eq!(signal.held(), 2);
        drop(b);
        assert_eq!(signal.held(), 1);
        // A new waiter reuses the freed slot.
        let mut c = Box::pin(SignalWait::new(signal.clone()));
        assert!(c.as_mut().poll(&mut cx).is_pending());
        assert_eq!(signal.slots.borrow().len(), 2);
        signal.fire();
        assert!(a.as_mut().poll(&mut cx).is_ready());
        assert!(c.as_mut().poll(&mut cx).is_ready());
        assert_eq!(signal.held(), 0);
    }
}
