//! V8 CPU profiles of the worker's isolate: recorded over wrangler's
//! inspector port ([`inspector`]), read into time per function
//! ([`cpuprofile`]), and split by the room object each sample worked for
//! ([`attribution`]).

pub mod attribution;
pub mod cpuprofile;
pub mod inspector;
