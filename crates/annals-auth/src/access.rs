//! Who may do what: the [`Principal`] a request runs as, and the decisions on stream rights and
//! admin operations, logged to the audit target when refused.
//!
//! Rules, as KurrentDB has them: members of `$admins` may do anything. A stream right is held by
//! the roles the stream's `$acl` names for it, or, where it names none, by those of the default
//! list for its kind (`$userStreamAcl` or `$systemStreamAcl` from `$settings`, else the built-in
//! defaults: user streams open to every user, `$…` streams to admins). `$$s`'s reads and writes
//! are `s`'s metadata rights. `$all` is the system stream `$all`, so its read right is set in the
//! metadata of `$$$all`. Admin operations (subscription groups, projections, relays, metrics)
//! need `$admins` or `$ops`; managing users needs `$admins`.

use std::sync::Arc;

use annals_core::{ROLE_ADMINS, ROLE_EVERYONE, ROLE_OPS, StreamRight};

/// The target the audit log lines go to.
pub const AUDIT_TARGET: &str = "annals::audit";

/// An authenticated user, as requests carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub login: String,
    pub groups: Box<[String]>,
}

impl Identity {
    /// Whether this user holds `role`: its login, one of its groups, or `$all`.
    pub fn holds(&self, role: &str) -> bool {
        role == ROLE_EVERYONE || role == self.login || self.groups.iter().any(|g| g == role)
    }

    pub fn is_admin(&self) -> bool {
        self.groups.iter().any(|g| g == ROLE_ADMINS)
    }

    /// In `$admins` or `$ops`.
    pub fn is_operator(&self) -> bool {
        self.is_admin() || self.groups.iter().any(|g| g == ROLE_OPS)
    }
}

/// Who a request runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// The server runs without authentication: everything is allowed.
    Open,
    /// Authentication is on and the request carried no credentials.
    Anonymous,
    User(Arc<Identity>),
}

impl Principal {
    /// The name audit lines give the principal.
    pub fn name(&self) -> &str {
        match self {
            Principal::Open => "(auth off)",
            Principal::Anonymous => "(anonymous)",
            Principal::User(u) => &u.login,
        }
    }
}

/// The stream whose access list governs `right` on `stream`, and the right there: `$$s`'s reads
/// and writes are `s`'s metadata reads and writes.
pub fn governing(stream: &str, right: StreamRight) -> (&str, StreamRight) {
    match stream.strip_prefix("$$") {
        Some(target) if !target.is_empty() => {
            let right = match right {
                StreamRight::Read | StreamRight::MetaRead => StreamRight::MetaRead,
                _ => StreamRight::MetaWrite,
            };
            (target, right)
        }
        _ => (stream, right),
    }
}

/// A refusal, logged once where it is decided.
pub(crate) fn denied(who: &Principal, stream: &str, what: &str) -> crate::AuthError {
    tracing::warn!(target: AUDIT_TARGET, user = who.name(), stream, what, "access denied");
    crate::AuthError::AccessDenied
}

/// The refusal for a request without credentials, logged once where it is decided.
pub(crate) fn unauthenticated(stream: &str, what: &str) -> crate::AuthError {
    tracing::warn!(target: AUDIT_TARGET, user = "(anonymous)", stream, what, "access denied: no credentials");
    crate::AuthError::Unauthenticated("credentials required".to_owned())
}

/// What `right` is called in audit lines.
pub(crate) fn right_name(right: StreamRight) -> &'static str {
    match right {
        StreamRight::Read => "read",
        StreamRight::Write => "write",
        StreamRight::Delete => "delete",
        StreamRight::MetaRead => "metadata read",
        StreamRight::MetaWrite => "metadata write",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_streams_are_governed_by_their_targets_metadata_rights() {
        assert_eq!(
            governing("$$orders", StreamRight::Write),
            ("orders", StreamRight::MetaWrite)
        );
        assert_eq!(
            governing("$$orders", StreamRight::Read),
            ("orders", StreamRight::MetaRead)
        );
        assert_eq!(
            governing("$$$all", StreamRight::Read),
            ("$all", StreamRight::MetaRead)
        );
        assert_eq!(
            governing("orders", StreamRight::Delete),
            ("orders", StreamRight::Delete)
        );
        assert_eq!(
            governing("$$", StreamRight::Read),
            ("$$", StreamRight::Read)
        );
    }

    #[test]
    fn identities_hold_their_login_groups_and_everyone() {
        let u = Identity {
            login: "ann".to_owned(),
            groups: vec!["sales".to_owned(), ROLE_OPS.to_owned()].into(),
        };
        assert!(u.holds("ann") && u.holds("sales") && u.holds(ROLE_EVERYONE));
        assert!(!u.holds("bob") && !u.holds(ROLE_ADMINS));
        assert!(u.is_operator() && !u.is_admin());
    }
}
