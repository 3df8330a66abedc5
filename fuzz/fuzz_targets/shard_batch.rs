//! The sequencer ⇄ shard wire format (`protocol::shard`): batches of
//! `message` frames and join replies, counted out by length so nothing a
//! frame holds is read as framing. Each input is read two ways:
//!
//! - as a batch's text and as a join reply's: never a panic; whatever is
//!   read has its frames in strictly increasing seq order and re-encodes to
//!   the very same text (one text per batch, so a shard and the sequencer
//!   cannot disagree about where a frame ends);
//! - as the choices that make a batch and a join reply of frames that look
//!   like framing (newlines, `prev` lines, `<seq> <length>` lines, cut-off
//!   JSON, any characters): read back frame for frame, byte for byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast_fuzz::contract::{crosses_batch_and_join_reply, lookalike};
use roomcast_fuzz::json::Gen;
use roomcast_protocol::shard::{encode_batch, encode_join_reply, parse_batch, parse_join_reply};

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    if let Ok(batch) = parse_batch(&text) {
        in_order(&batch.frames, &text);
        let again = encode_batch(batch.prev, batch.frames.iter().copied());
        assert_eq!(
            again, text,
            "a batch read from {text:?} writes as {again:?}"
        );
    }
    if let Ok(reply) = parse_join_reply(&text) {
        in_order(&reply.replay, &text);
        let presence: Vec<String> = reply.presence.iter().map(|f| f.to_string()).collect();
        let again = encode_join_reply(reply.welcome, &presence, reply.replay.iter().copied());
        assert_eq!(
            again, text,
            "a join reply read from {text:?} writes as {again:?}"
        );
    }

    let mut g = Gen::new(bytes);
    let prev = g.chance(2).then(|| g.u64());
    let mut seqs: Vec<u64> = Vec::new();
    let mut next = g.range(1, u64::MAX);
    while g.chance(2) {
        seqs.push(next);
        let bits = g.range(0, 63);
        match next.checked_add(g.range(1, 1 << bits)) {
            Some(after) => next = after,
            None => break,
        }
    }
    let frames: Vec<(u64, String)> = seqs.iter().map(|&s| (s, lookalike(&mut g))).collect();
    let frames: Vec<(u64, &str)> = frames.iter().map(|(s, f)| (*s, f.as_str())).collect();
    crosses_batch_and_join_reply(prev, &frames, &mut g);
});

/// Frames go in strictly increasing seq order, from 1.
fn in_order(frames: &[(u64, &str)], text: &str) {
    let mut last = 0;
    for (seq, _) in frames {
        assert!(*seq > last, "seq {seq} after {last} read from {text:?}");
        last = *seq;
    }
}
