//! Waiting for a condition instead of sleeping for a guessed time: [`eventually`] polls until
//! the condition holds and fails, naming what it waited for and how long, once a deadline has
//! passed. The deadline is a bound on a hang, not a claim about speed: make it generous.
//!
//! One file for every test crate of the workspace, each including it with
//! `#[path = "<relative path to>/tests/common/eventually.rs"] mod eventually;`.
#![allow(dead_code)] // each test crate uses what it needs

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

/// The first pause between polls; doubled after each poll up to [`POLL_MAX`], so a condition
/// that holds soon is seen soon and a slow one (a scrape, a process) is not polled in a loop.
const POLL_MIN: Duration = Duration::from_millis(5);

/// The longest pause between polls.
const POLL_MAX: Duration = Duration::from_millis(100);

/// What a polled condition returns: whether it holds and, once it does, what it yields.
pub trait Outcome {
    /// What a condition that holds yields.
    type Value;

    /// The value when the condition holds, else what the failure message shows of the state
    /// (empty when there is nothing to show).
    fn done(self) -> Result<Self::Value, String>;
}

/// `true` once the condition holds.
impl Outcome for bool {
    type Value = ();

    fn done(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err(String::new())
        }
    }
}

/// `Some(value)` once the condition holds.
impl<T> Outcome for Option<T> {
    type Value = T;

    fn done(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

/// `Ok(value)` once the condition holds; the last `Err` is shown if it never does.
impl<T, E: Debug> Outcome for Result<T, E> {
    type Value = T;

    fn done(self) -> Result<T, String> {
        self.map_err(|e| format!("{e:?}"))
    }
}

/// Polls `f` until it holds (`true`, `Some(v)` or `Ok(v)`; see [`Outcome`]) and returns what
/// it yields; panics naming `what`, the time waited and the last state shown once `deadline`
/// has passed.
#[track_caller]
pub fn eventually<O: Outcome>(
    what: &str,
    deadline: Duration,
    mut f: impl FnMut() -> O,
) -> O::Value {
    let start = Instant::now();
    let mut pause = POLL_MIN;
    loop {
        let left = match f().done() {
            Ok(v) => return v,
            Err(last) => time_left(what, start, deadline, &last),
        };
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(POLL_MAX);
    }
}

/// [`eventually`] for async code, where blocking the thread would stop the tasks the condition
/// waits for (a connection's driver on a single-threaded runtime): `f` is async and the pauses
/// are `sleep(pause)` (`tokio::time::sleep`, say).
pub async fn eventually_async<O: Outcome, S: Future<Output = ()>>(
    what: &str,
    deadline: Duration,
    sleep: impl Fn(Duration) -> S,
    mut f: impl AsyncFnMut() -> O,
) -> O::Value {
    let start = Instant::now();
    let mut pause = POLL_MIN;
    loop {
        let left = match f().await.done() {
            Ok(v) => return v,
            Err(last) => time_left(what, start, deadline, &last),
        };
        sleep(pause.min(left)).await;
        pause = (pause * 2).min(POLL_MAX);
    }
}

/// The time left until `deadline` (counted from `start`); panics, naming `what` and the state
/// `last` showed, when there is none.
#[track_caller]
fn time_left(what: &str, start: Instant, deadline: Duration, last: &str) -> Duration {
    let waited = start.elapsed();
    if waited >= deadline {
        if last.is_empty() {
            panic!("timed out after {waited:.1?} waiting for {what}");
        }
        panic!("timed out after {waited:.1?} waiting for {what} (last: {last})");
    }
    deadline - waited
}
