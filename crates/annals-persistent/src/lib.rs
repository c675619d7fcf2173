//! Persistent subscriptions: groups of consumers that share a stream's (or `$all`'s) events,
//! each event to one of them, with acks, retries, parking and checkpoints kept by the server, as
//! KurrentDB's `PersistentSubscriptions` service offers them.
//!
//! - `settings`: a group's settings and their validation (KurrentDB's rules and messages).
//! - `group`: the state machine of one group, pure (no I/O, no clock, no threads), so every
//!   rule is tested on its own against a reference model (`tests/persistent/`).
//! - `names`, `definition`: what a group is called, the streams that hold its state, and its
//!   stored definition.
//! - `store`: the group's state in the log (definitions, checkpoints, parked events).
//! - `actor`: the task that runs one group over the engine.
//! - `runtime`: [`Subscriptions`], every group of a server, and a [`Consumer`]'s handle.

mod actor;
mod definition;
mod error;
mod group;
mod names;
mod runtime;
mod settings;
mod store;

pub use actor::{ConnectionLabel, ConnectionState, GroupState};
pub use definition::{FilterDefinition, GroupDefinition, StartFrom};
pub use error::PersistentError;
pub use names::{
    ALL_SOURCE, CHECKPOINT_EVENT_TYPE, CONFIG_EVENT_TYPE, CONFIG_STREAM, GroupKey, LINK_EVENT_TYPE,
    Source,
};
pub use runtime::{Consumer, ConsumerAcks, ConsumerEvent, GroupInfo, Payload, Subscriptions};

pub use group::{
    ConsumerId, ConsumerInfo, Delivery, Group, GroupCounts, GroupError, Message, NackAction,
    ParkReason, Parked,
};
pub use settings::{GroupSettings, SettingsError, Strategy};
