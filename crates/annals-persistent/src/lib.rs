//! Persistent subscriptions: groups of consumers that share a stream's (or `$all`'s) events,
//! each event to one of them, with acks, retries, parking and checkpoints kept by the server, as
//! KurrentDB's `PersistentSubscriptions` service offers them.
//!
//! - [`settings`]: a group's settings and their validation (KurrentDB's rules and messages).
//! - [`group`]: the state machine of one group, pure (no I/O, no clock, no threads), so every
//!   rule is tested on its own against a reference model (`tests/persistent/`).

mod group;
mod settings;

pub use group::{
    ConsumerId, ConsumerInfo, Delivery, Group, GroupCounts, GroupError, Message, NackAction,
    ParkReason, Parked,
};
pub use settings::{GroupSettings, SettingsError, Strategy};
