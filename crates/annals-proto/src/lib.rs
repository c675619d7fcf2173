//! The Rust types and gRPC stubs generated from `proto/*.proto` by `build.rs`: Annals's own
//! copies of the KurrentDB (EventStoreDB) client protocol, wire-compatible in packages, messages
//! and field numbers. Generated code only, no logic.
//!
//! Messages are always compiled. Each service's server stub (`streams::streams_server`, …) comes
//! with the `server` feature, its client stub (`streams::streams_client`, …) with the `client`
//! feature: the server compiles no client and the load generator no server.

#![allow(
    clippy::all,
    clippy::pedantic,
    clippy::allow_attributes_without_reason,
    missing_debug_implementations,
    unreachable_pub,
    missing_docs,
    reason = "generated code: prost and tonic decide its shape, and which of these lints fire varies with the .proto files"
)]

/// `google.rpc`: the rich error status BatchAppend answers carry.
pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

/// `event_store.client` and its services.
pub mod event_store {
    pub mod client {
        tonic::include_proto!("event_store.client");

        pub mod streams {
            tonic::include_proto!("event_store.client.streams");
        }
        pub mod server_features {
            tonic::include_proto!("event_store.client.server_features");
        }
        pub mod gossip {
            tonic::include_proto!("event_store.client.gossip");
        }
        pub mod persistent_subscriptions {
            tonic::include_proto!("event_store.client.persistent_subscriptions");
        }
        pub mod users {
            tonic::include_proto!("event_store.client.users");
        }
    }
}

pub mod read_fields;

pub use event_store::client as shared;
pub use event_store::client::{gossip, persistent_subscriptions, server_features, streams, users};

/// The gRPC path of `Streams.Read`, which the server routes to a hand-encoding route of its own
/// and the benches' client calls with a hand-decoding codec of its own.
pub const STREAMS_READ_PATH: &str = "/event_store.client.streams.Streams/Read";
