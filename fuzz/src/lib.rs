//! What the fuzz targets share: the contract every answer must keep
//! ([`contract`]), valid input written from fuzz bytes ([`json`],
//! [`frames`]), JSON layout done by the harness itself ([`indent`]) and the
//! verifier with its keys and tokens ([`tokens`]).
//!
//! Each target feeds one parser arbitrary bytes and asserts, besides "no
//! panic", that what it accepts respects the limits and that what it refuses
//! is answered the way the worker answers it, so a refusal that cannot be put
//! on the wire is found here and not by a client. Arbitrary bytes are rarely
//! a valid input, so the targets also write valid ones from the same bytes
//! and require them read back as written: a parser that refused everything
//! would keep every other promise.

pub mod contract;
pub mod frames;
pub mod indent;
pub mod json;
pub mod tokens;
