//! Access lists as KurrentDB keeps them: `$acl` in a stream's metadata, and the defaults for user
//! and system streams in the `$settings` stream (`$userStreamAcl`, `$systemStreamAcl`).
//!
//! An access list names, for each [`StreamRight`], the roles that hold it: user logins, group
//! names, or `$all` for every authenticated user. A value is a string or an array of strings. A
//! right an access list leaves out falls back to the default list for the stream's kind; who is
//! asking, and whether admins pass anyway, is the auth layer's business.

use std::sync::Arc;

use crate::error::InputError;

/// The role that every authenticated user holds.
pub const ROLE_EVERYONE: &str = "$all";
/// The administrators' group: full access to everything.
pub const ROLE_ADMINS: &str = "$admins";
/// The operators' group: admin operations (subscription groups, projections, relays, users,
/// metrics), but not the contents of streams.
pub const ROLE_OPS: &str = "$ops";
/// The name access lists give the log as a whole: reading or subscribing to `$all` needs this
/// stream's read right, set in the metadata of `$$$all`.
pub const ALL_STREAM: &str = "$all";
/// The stream whose last event holds the default access lists.
pub const SETTINGS_STREAM: &str = "$settings";

/// What an access list grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamRight {
    Read,
    Write,
    Delete,
    MetaRead,
    MetaWrite,
}

impl StreamRight {
    pub const EVERY: [StreamRight; 5] = [
        StreamRight::Read,
        StreamRight::Write,
        StreamRight::Delete,
        StreamRight::MetaRead,
        StreamRight::MetaWrite,
    ];

    /// The key the right has in an access list.
    pub fn key(self) -> &'static str {
        match self {
            StreamRight::Read => "$r",
            StreamRight::Write => "$w",
            StreamRight::Delete => "$d",
            StreamRight::MetaRead => "$mr",
            StreamRight::MetaWrite => "$mw",
        }
    }
}

/// One access list: for each right, the roles that hold it, or `None` where the list is silent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamAcl {
    read: Option<Arc<[String]>>,
    write: Option<Arc<[String]>>,
    delete: Option<Arc<[String]>>,
    meta_read: Option<Arc<[String]>>,
    meta_write: Option<Arc<[String]>>,
}

impl StreamAcl {
    /// An access list giving every right to exactly `roles`.
    pub fn uniform(roles: &[&str]) -> Self {
        let list: Arc<[String]> = roles.iter().map(|r| (*r).to_owned()).collect();
        let mut acl = StreamAcl::default();
        for right in StreamRight::EVERY {
            *acl.slot_mut(right) = Some(Arc::clone(&list));
        }
        acl
    }

    fn slot(&self, right: StreamRight) -> &Option<Arc<[String]>> {
        match right {
            StreamRight::Read => &self.read,
            StreamRight::Write => &self.write,
            StreamRight::Delete => &self.delete,
            StreamRight::MetaRead => &self.meta_read,
            StreamRight::MetaWrite => &self.meta_write,
        }
    }

    fn slot_mut(&mut self, right: StreamRight) -> &mut Option<Arc<[String]>> {
        match right {
            StreamRight::Read => &mut self.read,
            StreamRight::Write => &mut self.write,
            StreamRight::Delete => &mut self.delete,
            StreamRight::MetaRead => &mut self.meta_read,
            StreamRight::MetaWrite => &mut self.meta_write,
        }
    }

    /// Parses an access list from its JSON value (an object of rights). Unknown keys are ignored,
    /// as KurrentDB does; a right whose value is neither a string nor an array of strings is an
    /// error.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, InputError> {
        let obj = value
            .as_object()
            .ok_or_else(|| InputError::InvalidMetadata("$acl must be a JSON object".to_owned()))?;
        let mut acl = StreamAcl::default();
        for right in StreamRight::EVERY {
            let roles = match obj.get(right.key()) {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(Arc::from(vec![s.clone()])),
                Some(serde_json::Value::Array(items)) => {
                    let roles = items
                        .iter()
                        .map(|i| i.as_str().map(str::to_owned))
                        .collect::<Option<Vec<String>>>()
                        .ok_or_else(|| {
                            InputError::InvalidMetadata(format!(
                                "$acl.{} must hold strings only",
                                right.key()
                            ))
                        })?;
                    Some(Arc::from(roles))
                }
                Some(_) => {
                    return Err(InputError::InvalidMetadata(format!(
                        "$acl.{} must be a string or an array of strings",
                        right.key()
                    )));
                }
            };
            *acl.slot_mut(right) = roles;
        }
        Ok(acl)
    }

    /// The roles holding `right`, or `None` if this list does not say.
    pub fn roles(&self, right: StreamRight) -> Option<&[String]> {
        self.slot(right).as_deref()
    }

    /// The roles holding `right` here, or else in `fallback`.
    pub fn roles_or<'a>(&'a self, right: StreamRight, fallback: &'a StreamAcl) -> &'a [String] {
        self.roles(right)
            .or_else(|| fallback.roles(right))
            .unwrap_or(&[])
    }
}

/// The default access lists, from the last event of `$settings`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclDefaults {
    /// For streams whose names do not start with `$`.
    pub user: StreamAcl,
    /// For `$…` streams, `$all` included.
    pub system: StreamAcl,
}

impl Default for AclDefaults {
    /// KurrentDB's built-in defaults: user streams open to every user, system streams to admins.
    fn default() -> Self {
        Self {
            user: StreamAcl::uniform(&[ROLE_EVERYONE]),
            system: StreamAcl::uniform(&[ROLE_ADMINS]),
        }
    }
}

impl AclDefaults {
    /// Parses a `$settings` event's JSON. A list it leaves out keeps the built-in default, and a
    /// right a list leaves out falls back to the built-in default for that right.
    pub fn parse(json: &[u8]) -> Result<Self, InputError> {
        let value: serde_json::Value = serde_json::from_slice(json)
            .map_err(|e| InputError::InvalidMetadata(format!("$settings is not JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| InputError::InvalidMetadata("$settings is not an object".to_owned()))?;
        let builtin = AclDefaults::default();
        let list = |key: &str, builtin: StreamAcl| -> Result<StreamAcl, InputError> {
            match obj.get(key) {
                None | Some(serde_json::Value::Null) => Ok(builtin),
                Some(v) => {
                    let mut acl = StreamAcl::from_json(v)?;
                    for right in StreamRight::EVERY {
                        if acl.roles(right).is_none() {
                            *acl.slot_mut(right) = builtin.slot(right).clone();
                        }
                    }
                    Ok(acl)
                }
            }
        };
        Ok(Self {
            user: list("$userStreamAcl", builtin.user)?,
            system: list("$systemStreamAcl", builtin.system)?,
        })
    }

    /// The defaults for the stream named `stream`.
    pub fn for_stream(&self, stream: &str) -> &StreamAcl {
        if stream.starts_with('$') {
            &self.system
        } else {
            &self.user
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_strings_and_arrays_and_leaves_the_rest_to_the_defaults() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"$r":"$all","$w":["ann","ops-team"],"other":1}"#).unwrap();
        let acl = StreamAcl::from_json(&v).unwrap();
        assert_eq!(acl.roles(StreamRight::Read), Some(&["$all".to_owned()][..]));
        assert_eq!(
            acl.roles(StreamRight::Write),
            Some(&["ann".to_owned(), "ops-team".to_owned()][..])
        );
        assert_eq!(acl.roles(StreamRight::Delete), None);
        let defaults = AclDefaults::default();
        assert_eq!(
            acl.roles_or(StreamRight::Delete, defaults.for_stream("orders-1")),
            &["$all".to_owned()][..]
        );
        assert_eq!(
            acl.roles_or(StreamRight::Delete, defaults.for_stream("$settings")),
            &["$admins".to_owned()][..]
        );
    }

    #[test]
    fn refuses_what_is_not_an_access_list() {
        for bad in [r#"[]"#, r#"{"$r":1}"#, r#"{"$w":["a",2]}"#, r#"{"$d":{}}"#] {
            let v: serde_json::Value = serde_json::from_str(bad).unwrap();
            assert!(StreamAcl::from_json(&v).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_fill_missing_rights_from_the_builtin_defaults() {
        let d = AclDefaults::parse(br#"{"$userStreamAcl":{"$r":["readers"]}}"#).unwrap();
        assert_eq!(
            d.user.roles(StreamRight::Read),
            Some(&["readers".to_owned()][..])
        );
        assert_eq!(
            d.user.roles(StreamRight::Write),
            Some(&["$all".to_owned()][..])
        );
        assert_eq!(d.system, AclDefaults::default().system);
        assert!(AclDefaults::parse(b"[1]").is_err());
        assert!(AclDefaults::parse(br#"{"$systemStreamAcl":{"$r":5}}"#).is_err());
    }
}
