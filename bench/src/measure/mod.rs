//! The figures of a run: a measurement window ([`probe`]) reads the
//! servers' and the benchmark's CPU ([`cpu`]) and the clients' counters at
//! its start and end, and turns them into a [`stats::Sample`]; several runs
//! make a [`stats::Summary`]. A process's resident memory is read from
//! `/proc` too ([`memory`]).

pub mod cpu;
pub mod memory;
pub mod probe;
pub mod stats;
