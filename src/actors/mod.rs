//! The live side of the server: one actor per topic (a board, a workspace, a member's
//! notifications), activated on first use and passivated when idle, and the node's
//! directory that finds them and hands them committed events.

pub mod availability;
mod directory;
mod inbox_window;
pub mod persister;
pub mod tenant;
mod topic;

pub use directory::{Directory, DirectoryStats, Route};
pub use persister::Persister;
pub use tenant::Standing;
pub use topic::{Disown, Ordered, Outbound, Overflow, Own, Presence, Subscribe, SubscribeReply, TopicActor, Unsubscribe};

/// How many recent events a topic keeps in memory for resuming clients.
pub const RING: usize = 1024;
/// A resume that misses more events than this gets a snapshot instead of a replay.
pub const MAX_REPLAY: i64 = 500;
