//! The Rust types and service traits generated from `proto/*.proto` by `build.rs`.

#![allow(
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations,
    unreachable_pub,
    missing_docs
)]

pub(crate) mod google {
    pub(crate) mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

pub(crate) mod event_store {
    pub(crate) mod client {
        tonic::include_proto!("event_store.client");

        pub(crate) mod streams {
            tonic::include_proto!("event_store.client.streams");
        }
        pub(crate) mod server_features {
            tonic::include_proto!("event_store.client.server_features");
        }
        pub(crate) mod gossip {
            tonic::include_proto!("event_store.client.gossip");
        }
        pub(crate) mod persistent_subscriptions {
            tonic::include_proto!("event_store.client.persistent_subscriptions");
        }
    }
}

pub(crate) use event_store::client as shared;
pub(crate) use event_store::client::{gossip, persistent_subscriptions, server_features, streams};
