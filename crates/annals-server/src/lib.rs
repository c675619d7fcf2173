//! What Annals's network APIs share, and the listener that serves them.
//!
//! [`ServerState`] is what every handler gets: the engine, the [`Limits`], the [`Metrics`] and,
//! with `--auth`, the users and access lists ([`Auth`]); every request served by [`serve`]
//! passes the cross-site check first (`origin.rs`: a state-changing request a browser sends for
//! a page of another origin is refused), then [`authenticate`], which tells handlers who it runs
//! as ([`Principal`]).
//! The gRPC API (`annals-grpc`) and the HTTP/JSON API (`annals-http`) each build an
//! [`axum::Router`] from it; `annals serve` merges the two and hands the result to [`serve`],
//! which accepts connections on one socket and speaks HTTP/1.1 and HTTP/2 (cleartext h2c, or TLS
//! with ALPN) on each, so KurrentDB clients and HTTP clients share port 2113.

mod auth;
mod jobs;
mod limits;
mod listen;
mod metrics;
mod origin;
mod process;
mod state;

pub use annals_auth::{Auth, AuthError, Principal, UserDetails};
pub use auth::{authenticate, is_grpc, open_path, refusal};
pub use jobs::{Held, JobSlot};
pub use limits::{AppendBudget, Limits};
pub use listen::{PeerAddr, SHUTDOWN_GRACE, ServeError, TlsFiles, serve};
pub use metrics::{Api, Metrics};
pub use process::ProcessFigures;
pub use state::ServerState;
