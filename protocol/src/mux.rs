//! Several rooms on one connection: the hub objects that hold multiplexed
//! connections, each serving many rooms.

/// The Durable Object name of hub `index`. Room names never contain `/`,
/// so a hub's name is never a room's.
pub fn hub_name(index: u32) -> String {
    format!("hub/{index}")
}
