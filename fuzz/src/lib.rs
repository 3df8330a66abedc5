//! What the fuzz targets share: the contract every answer must keep
//! ([`contract`]) and the verifier with its keys and tokens ([`tokens`]).
//!
//! Each target feeds one parser arbitrary bytes and asserts, besides "no
//! panic", that what it accepts respects the limits and that what it refuses
//! is answered the way the worker answers it, so a refusal that cannot be put
//! on the wire is found here and not by a client.

pub mod contract;
pub mod tokens;
