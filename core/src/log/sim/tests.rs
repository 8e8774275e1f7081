//! The simulation's tests: many seeds, the seeds that found bugs, and directed scenarios.

use super::*;

/// Runs `seed`, turning a panic into its message (so a long run names every failing seed).
fn run(seed: u64, steps: usize, trace: bool) -> Result<Stats, String> {
    std::panic::catch_unwind(|| {
        let mut sim = Sim::new(seed, trace);
        sim.run(steps);
        sim.stats
    })
    .map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| format!("seed {seed}: panicked"))
    })
}

/// Steps per run.
const STEPS: usize = 2000;

#[test]
fn the_log_survives_crashes_at_any_point() {
    let env = |name: &str| std::env::var(name).ok().and_then(|s| s.parse().ok());
    // Longer runs reach further (more segments, more restarts); a seed's run with other
    // steps is another run.
    let steps: usize = env("FANFARE_SIM_STEPS").unwrap_or(STEPS);
    if let Some(seed) = env("FANFARE_SIM_SEED") {
        let stats = run(seed as u64, steps, true);
        eprintln!("{stats:?}");
        assert!(stats.is_ok(), "{}", stats.err().unwrap_or_default());
        return;
    }
    // A fixed set in CI; FANFARE_SIM_SEEDS=100000 for a long run.
    let seeds = env("FANFARE_SIM_SEEDS").unwrap_or(300) as u64;
    let mut failed = Vec::new();
    let mut total = Stats::default();
    for seed in 0..seeds {
        match run(seed, steps, false) {
            Ok(s) => {
                total.ops += s.ops;
                total.crashes += s.crashes;
                total.recoveries += s.recoveries;
                total.acked += s.acked;
                total.adopted += s.adopted;
                total.damage_without_flips += s.damage_without_flips;
                total.failed += s.failed;
            }
            Err(e) => {
                eprintln!("{e}");
                failed.push(seed);
            }
        }
    }
    eprintln!("{seeds} seeds: {total:?}");
    assert!(
        failed.is_empty(),
        "failing seeds (replay one with FANFARE_SIM_SEED=n): {failed:?}"
    );
}

/// Replays a seed that found a bug.
fn regression(seed: u64) {
    if let Err(e) = run(seed, STEPS, false) {
        panic!("{e}");
    }
}

/// Issue 29: after a restart, the first O_DSYNC write compared itself with how far the segment
/// was zeroed before opening the segment (opening it is what reads that), so its zeros started
/// at offset 0. Seed 17 (no faults): a power loss tears a batch; recovery's first op writes
/// (zeros over the torn tail, and a commit record for the whole records before it), and that
/// write, the first to the reopened segment, zeroed it from its start; the next recovery
/// finds the acknowledged records before the tail block gone.
#[test]
fn seed_17_a_reopened_segment_keeps_its_records() {
    regression(17);
}

/// O_DSYNC: a write fails with EIO, having sent a sector on its way; the process dies;
/// recovery reads the batch back whole and syncs, but `Sync` under O_DSYNC was answered at
/// once, so `Recovered` was reported, and later batches acknowledged, over a sector that a
/// power loss then took.
#[test]
fn seed_760_what_a_failed_write_left_is_durable_once_recovered() {
    regression(760);
}

/// fdatasync: the process dies after a batch's write and before its sync; recovery reads the
/// batch back whole, has nothing to write, and did nothing; the log rolled to a new segment
/// and never synced the old one; a power loss took records that had come back (and been
/// served), before acknowledged ones, and nothing reported it.
#[test]
fn seed_70_what_recovery_read_back_is_durable_before_the_log_rolls_on() {
    regression(70);
}

/// A last segment cut at a byte no block's multiple (the cut fault): its first write after
/// the restart extended it with zeros from that byte, O_DIRECT refused (EINVAL), and the log
/// failed.
#[test]
fn seed_31_a_segment_cut_at_any_byte_takes_appends() {
    regression(31);
}

/// A last segment cut inside a record's padding (the cut fault, past the durable end): the
/// scan took the record as whole, its end past the bytes there were, and recovery panicked
/// slicing them (the shard could not start).
#[test]
fn seed_9282_a_segment_cut_inside_a_records_padding_is_read_back() {
    regression(9282);
}

/// Issue 29 step by step, whatever the simulation's random choices become: records made
/// durable in a segment (more than a block of them: a write after a restart writes only the
/// last block again), then restarts: after a process crash that left a torn record past them
/// (recovery's first op writes zeros over it), and after power losses (recovery's first op
/// syncs), each followed by one more record; every record must come back.
#[test]
fn a_segment_reopened_after_a_restart_keeps_its_records() {
    let shape = Shape {
        cfg: LogConfig {
            segment_bytes: 1 << 20,
            block_bytes: 512,
        },
        dsync: true,
        zero_step: ZERO_STEP,
        eio_per_mille: 0,
        flips: false,
    };
    let mut sim = Sim::with_shape(0, Rng::new(0), shape, false);
    sim.fs.crash(Crash::Process);
    sim.restart();
    for _ in 0..10 {
        sim.append();
    }
    sim.settle();
    assert_eq!(sim.acked.len(), 10);
    let (segment, end) = sim.log.head();
    assert!(end > 512);
    sim.fs.crash(Crash::Process);
    let path = Path::new(DIR).join(format!("{segment:020}.seg"));
    sim.fs.scribble(&path, end as usize, &[0xA5; 100]);
    for _ in 0..3 {
        // `restart` checks that every acknowledged record came back.
        sim.restart();
        sim.append();
        sim.settle();
        sim.fs.crash(Crash::Power);
    }
    assert_eq!(sim.acked.len(), 13);
    sim.restart();
}

/// A log on `dsync` O_DSYNC or fdatasync whose segments roll every `segment_bytes`, opened on
/// an empty disk whose faults `seed` picks.
fn directed(seed: u64, dsync: bool, segment_bytes: u64) -> Sim {
    let shape = Shape {
        cfg: LogConfig {
            segment_bytes,
            block_bytes: 512,
        },
        dsync,
        zero_step: 64 << 10,
        eio_per_mille: 0,
        flips: false,
    };
    let mut sim = Sim::with_shape(seed, Rng::new(seed), shape, false);
    sim.fs.crash(Crash::Process);
    sim.restart();
    sim
}

/// A write that fails (O_DSYNC) may leave some of its sectors on their way to the disk; a
/// process crash, and recovery reads them back (and adopts the records whole in them). Under
/// O_DSYNC the log's `Sync` op was answered at once, so recovery reported them durable while
/// they were not, and a power loss took them.
#[test]
fn what_a_failed_write_left_is_synced_before_recovery_reports() {
    for seed in 0..32 {
        let mut sim = directed(seed, true, 1 << 20);
        for _ in 0..5 {
            sim.append();
        }
        sim.settle();
        for _ in 0..5 {
            sim.append();
        }
        sim.fs.set_eio(1000);
        sim.settle();
        sim.fs.set_eio(0);
        assert!(sim.log.is_failed());
        sim.fs.crash(Crash::Process);
        sim.restart();
        sim.settle(); // recovery's op: every record read back counts as acknowledged
        sim.fs.crash(Crash::Power);
        sim.restart(); // checks
    }
}

/// A batch written and not yet synced when the process dies reads back whole: recovery has
/// nothing to write. Without a sync, the log rolled to a new segment and never synced the old
/// one, and a power loss took records that had come back, from before acknowledged ones.
#[test]
fn what_recovery_read_back_is_synced_before_the_log_rolls_on() {
    for seed in 0..32 {
        let mut sim = directed(seed, false, 2048);
        for _ in 0..3 {
            sim.append();
        }
        sim.settle();
        for _ in 0..3 {
            sim.append();
        }
        while let Some(op) = sim.log.next_op() {
            let write = matches!(op, Op::Write { .. });
            sim.perform(op);
            if write {
                break;
            }
        }
        sim.fs.crash(Crash::Process);
        sim.restart();
        let before = sim.log.head().0;
        for _ in 0..12 {
            sim.append();
        }
        sim.settle();
        assert!(sim.log.head().0 > before, "the log rolled on");
        sim.fs.crash(Crash::Power);
        sim.restart(); // checks
    }
}

/// A segment cut at a byte that is not a block's (by hand, or a filesystem's repair), past
/// its records: the zeros that extend it after a restart started at its unaligned end, and
/// O_DIRECT refused them; the log failed at its first append. (`core/tests/durable.rs` cuts
/// one too.)
#[test]
fn a_segment_cut_at_any_byte_takes_appends_after_a_restart() {
    let mut sim = directed(0, true, 1 << 20);
    for _ in 0..10 {
        sim.append();
    }
    sim.settle();
    let (segment, end) = sim.log.head();
    sim.fs.crash(Crash::Process);
    let path = Path::new(DIR).join(format!("{segment:020}.seg"));
    sim.fs.cut(&path, end as usize + 100);
    sim.restart();
    sim.append();
    sim.settle();
    assert!(!sim.log.is_failed(), "the append after the restart failed");
    assert_eq!(sim.acked.len(), 11);
    sim.fs.crash(Crash::Power);
    sim.restart();
}
