//! The definition file's TOML shape, as serde reads it: one `Raw*` struct per table, unknown
//! keys refused.
//!
//! These types only mirror the text; every check of a value and every default is the compile
//! step's, so the file format can be read here at a glance.

use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProjection {
    pub(super) name: String,
    #[serde(default)]
    pub(super) target: Option<String>,
    /// Deserialized apart ([`annals_core::SourceSpec`]) so its errors name the field.
    pub(super) source: toml::Value,
    #[serde(default)]
    pub(super) tables: Vec<String>,
    #[serde(default)]
    pub(super) indexes: Vec<String>,
    #[serde(default)]
    pub(super) setup: Vec<String>,
    #[serde(default)]
    pub(super) partitions: Option<i64>,
    /// Deserialized apart ([`RawPolicy`]) so its errors name the field.
    #[serde(default)]
    pub(super) on_error: Option<toml::Value>,
    #[serde(default)]
    pub(super) handler: Vec<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    #[serde(default)]
    pub(super) policy: Option<String>,
    #[serde(default)]
    pub(super) attempts: Option<i64>,
    #[serde(default)]
    pub(super) backoff_ms: Option<i64>,
    #[serde(default)]
    pub(super) backoff_max_ms: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHandler {
    pub(super) event_type: String,
    #[serde(default)]
    pub(super) sql: Option<String>,
    #[serde(default)]
    pub(super) params: Vec<String>,
    #[serde(default)]
    pub(super) effects: Vec<RawEffect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(super) enum RawEffect {
    Http(RawHttp),
    Message(RawMessage),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    pub(super) url: String,
    #[serde(default)]
    pub(super) method: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMessage {
    pub(super) subject: String,
}
