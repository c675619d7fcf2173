//! A group's definition (source, name, start, `$all` filter, settings) and the JSON it is kept
//! as in the config stream. The stored form is Annals's own and versioned, so a later format can
//! read what this one wrote.

use std::time::Duration;

use annals_core::{Filter, FilterTarget};
use serde::{Deserialize, Serialize};

use crate::error::PersistentError;
use crate::names::{GroupKey, Source};
use crate::settings::{GroupSettings, Strategy};

/// The version of the stored definitions this code writes.
const STORED_VERSION: u32 = 1;

/// Where a group starts reading when it has no checkpoint.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StartFrom {
    /// The source's first event.
    Start,
    /// After the source's last event when the group was created (live events only).
    End,
    /// A revision (stream groups) or position (`$all` groups), inclusive.
    At(u64),
}

/// Which events of `$all` a group takes, as a client's filter says.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FilterDefinition {
    /// `true`: the filter looks at stream names; `false`: at event types.
    pub on_stream: bool,
    pub regex: Option<String>,
    #[serde(default)]
    pub prefixes: Vec<String>,
}

impl FilterDefinition {
    /// The engine's filter.
    pub fn compile(&self) -> Result<Filter, PersistentError> {
        let target = if self.on_stream {
            FilterTarget::StreamName
        } else {
            FilterTarget::EventType
        };
        let filter = match &self.regex {
            Some(regex) => Filter::regex(target, regex),
            None => Filter::prefixes(target, self.prefixes.clone()),
        };
        filter.map_err(|e| PersistentError::Invalid(format!("filter: {e}")))
    }
}

/// Everything that defines a group.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct GroupDefinition {
    pub key: GroupKey,
    pub start: StartFrom,
    pub resolve_links: bool,
    pub extra_statistics: bool,
    /// `$all` groups only.
    pub filter: Option<FilterDefinition>,
    pub settings: GroupSettings,
}

impl GroupDefinition {
    /// Checks the definition as a whole: its settings, and its filter on a `$all` group only.
    pub fn validate(&self) -> Result<(), PersistentError> {
        self.settings
            .validate()
            .map_err(|e| PersistentError::InvalidSettings {
                stream: self.key.source.to_string(),
                group: self.key.group.clone(),
                reason: e.to_string(),
            })?;
        if let Some(filter) = &self.filter {
            if self.key.source != Source::All {
                return Err(PersistentError::Invalid(
                    "only a group on $all can have a filter".to_owned(),
                ));
            }
            filter.compile()?;
        }
        Ok(())
    }
}

/// The stored form of one definition.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredGroup {
    source: String,
    group: String,
    start: StartFrom,
    resolve_links: bool,
    extra_statistics: bool,
    filter: Option<FilterDefinition>,
    strategy: String,
    message_timeout_ms: u64,
    max_retry_count: u32,
    live_buffer_size: usize,
    read_batch_size: usize,
    history_buffer_size: usize,
    checkpoint_after_ms: u64,
    min_checkpoint_count: u64,
    max_checkpoint_count: u64,
    max_subscriber_count: usize,
    conflate_behind: Option<u64>,
}

/// The stored form of the config stream's event: every group's definition.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredConfig {
    version: u32,
    groups: Vec<StoredGroup>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The config event's JSON for `groups`.
pub(crate) fn encode_config(groups: &[GroupDefinition]) -> Vec<u8> {
    let stored = StoredConfig {
        version: STORED_VERSION,
        groups: groups
            .iter()
            .map(|d| StoredGroup {
                source: d.key.source.to_string(),
                group: d.key.group.clone(),
                start: d.start,
                resolve_links: d.resolve_links,
                extra_statistics: d.extra_statistics,
                filter: d.filter.clone(),
                strategy: d.settings.strategy.name().to_owned(),
                message_timeout_ms: millis(d.settings.message_timeout),
                max_retry_count: d.settings.max_retry_count,
                live_buffer_size: d.settings.live_buffer_size,
                read_batch_size: d.settings.read_batch_size,
                history_buffer_size: d.settings.history_buffer_size,
                checkpoint_after_ms: millis(d.settings.checkpoint_after),
                min_checkpoint_count: d.settings.min_checkpoint_count,
                max_checkpoint_count: d.settings.max_checkpoint_count,
                max_subscriber_count: d.settings.max_subscriber_count,
                conflate_behind: d.settings.conflate_behind,
            })
            .collect(),
    };
    // A struct of strings, numbers and options always serializes.
    serde_json::to_vec(&stored).unwrap_or_default()
}

/// The definitions in a config event's JSON.
pub(crate) fn decode_config(json: &[u8]) -> Result<Vec<GroupDefinition>, PersistentError> {
    let bad = |what: String| PersistentError::Corrupt(format!("stored group definitions: {what}"));
    let stored: StoredConfig = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
    if stored.version != STORED_VERSION {
        return Err(bad(format!("unknown version {}", stored.version)));
    }
    stored
        .groups
        .into_iter()
        .map(|g| {
            let key = GroupKey::new(Source::parse(&g.source)?, &g.group)?;
            Ok(GroupDefinition {
                key,
                start: g.start,
                resolve_links: g.resolve_links,
                extra_statistics: g.extra_statistics,
                filter: g.filter,
                settings: GroupSettings {
                    strategy: Strategy::parse(&g.strategy).map_err(|e| bad(e.to_string()))?,
                    message_timeout: Duration::from_millis(g.message_timeout_ms),
                    max_retry_count: g.max_retry_count,
                    live_buffer_size: g.live_buffer_size,
                    read_batch_size: g.read_batch_size,
                    history_buffer_size: g.history_buffer_size,
                    checkpoint_after: Duration::from_millis(g.checkpoint_after_ms),
                    min_checkpoint_count: g.min_checkpoint_count,
                    max_checkpoint_count: g.max_checkpoint_count,
                    max_subscriber_count: g.max_subscriber_count,
                    conflate_behind: g.conflate_behind,
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_round_trip_through_their_stored_form() {
        let defs = vec![
            GroupDefinition {
                key: GroupKey::new(Source::parse("orders").unwrap(), "g1").unwrap(),
                start: StartFrom::At(7),
                resolve_links: true,
                extra_statistics: false,
                filter: None,
                settings: GroupSettings {
                    strategy: Strategy::Pinned,
                    conflate_behind: Some(100),
                    ..GroupSettings::default()
                },
            },
            GroupDefinition {
                key: GroupKey::new(Source::All, "g2").unwrap(),
                start: StartFrom::End,
                resolve_links: false,
                extra_statistics: true,
                filter: Some(FilterDefinition {
                    on_stream: false,
                    regex: None,
                    prefixes: vec!["Order".to_owned()],
                }),
                settings: GroupSettings::default(),
            },
        ];
        assert_eq!(decode_config(&encode_config(&defs)).unwrap(), defs);
        assert!(matches!(
            decode_config(b"{\"version\":99,\"groups\":[]}"),
            Err(PersistentError::Corrupt(_))
        ));
        assert!(decode_config(b"not json").is_err());
    }
}
