//! Fanfare's benchmarks. The criterion suites live in `benches/` (see bench/README.md);
//! the load generator will live here.
#![warn(missing_docs)]
