//! The load clients: what connects to a server under test, offers it load
//! and records what arrives. Every message carries a [`recorder::Stamp`]
//! read on the one [`clock`]; [`publisher`] sends them paced or windowed
//! ([`load`]), [`receiver`] takes them off WebSockets, polls or a Kafka
//! topic into a [`recorder::Recorder`], and every socket's bytes are
//! counted ([`net`]) on the way ([`ws`], [`http`]). A [`fleet`] is the
//! publishers and subscribers of K rooms, connected once for many runs. A join storm's
//! clients each keep a [`presence`] view, with [`token`]s of their own.

pub mod clock;
pub mod fleet;
pub mod http;
pub mod load;
pub mod net;
pub mod presence;
pub mod publisher;
pub mod receiver;
pub mod recorder;
pub mod ws;
