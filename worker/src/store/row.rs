//! A message as the tables hold it: its columns, in order, and its values
//! bound as the runtime needs them (every bound value passes through a
//! JavaScript number).

use roomcast_protocol::wire::Message;
use worker::SqlStorageValue;

/// The columns of a stored message, in the order the tables hold them.
pub(super) const COLUMNS: &str = "seq, id, ts, sender, origin, data, trace";

/// A timestamp bound no message reaches, and still exact as a JavaScript
/// number (the runtime passes bound values through JavaScript).
const NO_CUTOFF: i64 = (1 << 53) - 1;

/// A message's values in [`COLUMNS`] order.
pub(super) fn row_values(m: &Message) -> [SqlStorageValue; 7] {
    [
        seq_value(m.seq),
        m.id.as_str().into(),
        ms_value(m.ts),
        m.sender.as_str().into(),
        m.origin.as_str().into(),
        m.data.get().into(),
        m.trace.as_deref().into(),
    ]
}

/// A seq as a bound value; seqs never come near JavaScript's exact limit,
/// and a client's `since` beyond it reads as "after everything".
pub(super) fn seq_value(seq: u64) -> SqlStorageValue {
    (seq.min(NO_CUTOFF as u64) as i64).into()
}

/// A time in ms as a bound value.
pub(super) fn ms_value(ms: u64) -> SqlStorageValue {
    (ms.min(NO_CUTOFF as u64) as i64).into()
}
