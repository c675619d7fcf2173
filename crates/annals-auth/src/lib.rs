//! Users and access control, the layer the network APIs call before the engine: who is asking
//! ([`Auth::authenticate`]) and whether they may ([`Auth::check_stream`], [`Auth::check_operator`],
//! [`Auth::check_admin`]).
//! The engine stays unaware of users.
//!
//! - Users live in the log ([`users`]): folded into memory at open, every change appended first.
//! - Passwords are argon2id hashes ([`password`]). A verified password is remembered as a keyed
//!   digest on its user's entry, so a request with cached credentials costs one SHA-256 and a
//!   hash-map lookup; any change to the user (password, groups, disabled, deleted) replaces the
//!   entry and with it the cached credential.
//! - Failed logins are rate-limited per user and per address ([`limiter`]).
//! - Access lists are KurrentDB's ([`access`]); the defaults come from `$settings`, which a task
//!   follows so a change applies without a restart.
//! - Every admin command and every refusal is logged to [`AUDIT_TARGET`] with the user.

mod access;
mod limiter;
mod password;
pub mod users;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use annals_core::{
    AclDefaults, DomainError, InputError, ROLE_ADMINS, Revision, SETTINGS_STREAM, StreamName,
    StreamRight,
};
use annals_engine::{Engine, EngineError};
use base64::Engine as _;
use parking_lot::RwLock;

pub use access::{AUDIT_TARGET, Identity, Principal, governing};
pub use limiter::{FAILURE_REFILL_PER_SEC, FAILURES_BURST};
pub use password::{HASHES_CONCURRENT, PASSWORD_BYTES_MAX};
pub use users::UserRecord;

use crate::password::{PasswordDigest, Passwords};

/// The user the first start with authentication creates.
pub const ADMIN_LOGIN: &str = "admin";
/// The longest `Authorization` header value looked at, in bytes.
pub const AUTHORIZATION_BYTES_MAX: usize = 4096;

/// Why an auth call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No credentials, wrong ones, a disabled user, or too many failures.
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    /// Authenticated, but not allowed.
    #[error("access denied")]
    AccessDenied,
    #[error("user '{0}' not found")]
    UserNotFound(String),
    #[error("user '{0}' already exists")]
    UserExists(String),
    /// A request that cannot be carried out as asked.
    #[error("{0}")]
    Invalid(String),
    #[error(
        "the first start with authentication creates the admin user and needs its password: \
         give --admin-password or set ANNALS_ADMIN_PASSWORD"
    )]
    NoAdminPassword,
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("{0}")]
    Internal(String),
}

/// What a user looks like from outside: everything but the password hash.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct UserDetails {
    pub login: String,
    pub full_name: String,
    pub groups: Vec<String>,
    pub disabled: bool,
    /// Nanoseconds since the Unix epoch.
    pub updated_nanos: i64,
}

impl From<&UserRecord> for UserDetails {
    fn from(r: &UserRecord) -> Self {
        Self {
            login: r.login.clone(),
            full_name: r.full_name.clone(),
            groups: r.groups.clone(),
            disabled: r.disabled,
            updated_nanos: r.updated_nanos,
        }
    }
}

/// A user as held in memory.
#[derive(Debug)]
struct Entry {
    record: UserRecord,
    identity: Arc<Identity>,
    /// The digest of the password last verified against `record`'s hash.
    verified: Option<PasswordDigest>,
    /// Changes with every replacement of the entry, so a verification that raced a change
    /// cannot cache a credential for the old record.
    generation: u64,
}

#[derive(Debug, Default)]
struct Users {
    map: HashMap<String, Entry>,
    /// The users stream's last revision.
    last_revision: Option<u64>,
    generations: u64,
}

impl Users {
    /// Applies the users stream's change at `revision` unless it was applied already (by the
    /// write that made it here, or by the follower that read it from another node's write).
    fn apply(&mut self, revision: u64, change: users::UserChange) {
        if self.last_revision.is_some_and(|last| last >= revision) {
            return;
        }
        self.last_revision = Some(revision);
        match change {
            users::UserChange::Put(record) => self.put(record),
            users::UserChange::Remove(login) => {
                self.map.remove(&login);
            }
        }
    }

    fn put(&mut self, record: UserRecord) {
        self.generations += 1;
        let identity = Arc::new(Identity {
            login: record.login.clone(),
            groups: record.groups.clone().into(),
        });
        self.map.insert(
            record.login.clone(),
            Entry {
                record,
                identity,
                verified: None,
                generation: self.generations,
            },
        );
    }
}

/// A change to one user, as the management calls ask for it.
#[derive(Clone, Debug)]
enum Change {
    Update {
        full_name: String,
        groups: Vec<String>,
        password: Option<String>,
    },
    Enabled(bool),
    Password(String),
}

/// Users, credentials and access decisions over one engine.
#[derive(Debug)]
pub struct Auth {
    engine: Engine,
    users: RwLock<Users>,
    /// Serialises user changes: each appends at the users stream's expected revision.
    writes: tokio::sync::Mutex<()>,
    passwords: Passwords,
    limiter: limiter::FailureLimiter,
    /// Verifications under way, by credential digest: logins that arrive with the same login and
    /// password while one is being hashed wait for its verdict instead of hashing (and taking a
    /// failed-login token) again, so a client opening many connections at once costs one hash.
    verifying: parking_lot::Mutex<HashMap<PasswordDigest, Arc<tokio::sync::OnceCell<Verdict>>>>,
    defaults: RwLock<Arc<AclDefaults>>,
}

/// What checking a password found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Right,
    Wrong,
    /// Not checked: too many failed logins of this user or from this address.
    Limited,
}

impl Auth {
    /// Loads users and `$settings`; on the first start (no users yet) creates [`ADMIN_LOGIN`] in
    /// `$admins` with `admin_password`, which is then required. Starts the task that follows
    /// `$settings`, so it must run inside a tokio runtime.
    pub async fn open(
        engine: Engine,
        admin_password: Option<String>,
    ) -> Result<Arc<Self>, AuthError> {
        let (map, last_revision) = {
            let engine = engine.clone();
            tokio::task::spawn_blocking(move || users::fold(&engine))
                .await
                .map_err(|e| AuthError::Internal(e.to_string()))??
        };
        let mut state = Users {
            last_revision,
            ..Users::default()
        };
        for (_, record) in map {
            state.put(record);
        }
        let (defaults, settings_revision) = read_settings(&engine)?;
        let auth = Arc::new(Self {
            engine,
            users: RwLock::new(state),
            writes: tokio::sync::Mutex::new(()),
            passwords: Passwords::new(),
            limiter: limiter::FailureLimiter::new(),
            verifying: parking_lot::Mutex::new(HashMap::new()),
            defaults: RwLock::new(Arc::new(defaults)),
        });
        if auth.users.read().map.is_empty() {
            let password = admin_password.ok_or(AuthError::NoAdminPassword)?;
            let created = auth
                .create_user_unchecked(
                    ADMIN_LOGIN,
                    "Administrator",
                    vec![ROLE_ADMINS.to_owned()],
                    password,
                )
                .await;
            match created {
                Ok(()) => {
                    tracing::info!(target: AUDIT_TARGET, user = ADMIN_LOGIN, "created the admin user on the first start with authentication");
                }
                // Another node serving the same store created the first users at the same
                // moment; they arrive here through the users stream.
                Err(AuthError::Engine(EngineError::Domain(
                    DomainError::WrongExpectedRevision { .. },
                ))) => {
                    tracing::info!("another node created the first users; following them");
                }
                Err(e) => return Err(e),
            }
        }
        tokio::spawn(follow_settings(Arc::clone(&auth), settings_revision));
        let users_revision = auth.users.read().last_revision;
        tokio::spawn(follow_users(Arc::clone(&auth), users_revision));
        Ok(auth)
    }

    /// Who the `Authorization` header `header` (absent: anonymous) names, checked against the
    /// stored password; `addr` is the client's address, for rate-limiting failures.
    pub async fn authenticate(
        &self,
        header: Option<&[u8]>,
        addr: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        let Some(header) = header else {
            return Ok(Principal::Anonymous);
        };
        let (login, password) = parse_basic(header)?;
        let digest = self.passwords.digest(&login, &password);
        let (phc, generation) = {
            let users = self.users.read();
            match users.map.get(&login) {
                Some(e) if e.record.disabled => {
                    drop(users);
                    tracing::warn!(target: AUDIT_TARGET, user = %login, "login refused: user disabled");
                    return Err(AuthError::Unauthenticated("user disabled".to_owned()));
                }
                Some(e) if e.verified == Some(digest) => {
                    return Ok(Principal::User(Arc::clone(&e.identity)));
                }
                Some(e) => (Some(e.record.password_hash.clone()), e.generation),
                None => (None, 0),
            }
        };
        let cell = Arc::clone(self.verifying.lock().entry(digest).or_default());
        let verdict = cell
            .get_or_try_init(|| async {
                if !self.limiter.attempt(&login, addr, Instant::now()) {
                    return Ok::<_, AuthError>(Verdict::Limited);
                }
                let right = match phc {
                    Some(phc) => self.passwords.verify(phc, password).await?,
                    None => false,
                };
                if right {
                    self.limiter.succeeded(&login, addr, Instant::now());
                    Ok(Verdict::Right)
                } else {
                    Ok(Verdict::Wrong)
                }
            })
            .await
            .copied();
        {
            let mut verifying = self.verifying.lock();
            if verifying
                .get(&digest)
                .is_some_and(|c| Arc::ptr_eq(c, &cell))
            {
                verifying.remove(&digest);
            }
        }
        match verdict? {
            Verdict::Right => {}
            Verdict::Limited => {
                tracing::warn!(target: AUDIT_TARGET, user = %login, addr = ?addr, "login refused: too many failed logins");
                return Err(AuthError::Unauthenticated(
                    "too many failed logins; try again later".to_owned(),
                ));
            }
            Verdict::Wrong => {
                tracing::warn!(target: AUDIT_TARGET, user = %login, addr = ?addr, "login refused: wrong login or password");
                return Err(AuthError::Unauthenticated(
                    "wrong login or password".to_owned(),
                ));
            }
        }
        let mut users = self.users.write();
        match users.map.get_mut(&login) {
            Some(e) if e.generation == generation && !e.record.disabled => {
                e.verified = Some(digest);
                Ok(Principal::User(Arc::clone(&e.identity)))
            }
            // The user changed while its password was being checked: judge again.
            _ => Err(AuthError::Unauthenticated(
                "the user changed during login; try again".to_owned(),
            )),
        }
    }

    /// Whether `who` holds `right` on `stream`.
    pub fn check_stream(
        &self,
        who: &Principal,
        stream: &str,
        right: StreamRight,
    ) -> Result<(), AuthError> {
        let user = match who {
            Principal::Open => return Ok(()),
            Principal::Anonymous => {
                return Err(access::unauthenticated(stream, access::right_name(right)));
            }
            Principal::User(u) => u,
        };
        if user.is_admin() {
            return Ok(());
        }
        let (target, right) = governing(stream, right);
        let defaults = Arc::clone(&self.defaults.read());
        let fallback = defaults.for_stream(target);
        let acl = self.engine.stream_acl(target);
        let roles = match &acl {
            Some(acl) => acl.roles_or(right, fallback),
            None => fallback.roles(right).unwrap_or(&[]),
        };
        if roles.iter().any(|r| user.holds(r)) {
            Ok(())
        } else {
            Err(access::denied(who, stream, access::right_name(right)))
        }
    }

    /// Whether `who` may run the admin operation `what` (`$admins` or `$ops`); logs it to the
    /// audit target either way.
    pub fn check_operator(&self, who: &Principal, what: &str) -> Result<(), AuthError> {
        admin_command(who, what, Identity::is_operator)
    }

    /// Whether `who` may manage users with `what` (`$admins` only, as in KurrentDB: a member of
    /// `$ops` who could create or change users could make itself an admin); logs it to the
    /// audit target either way.
    pub fn check_admin(&self, who: &Principal, what: &str) -> Result<(), AuthError> {
        admin_command(who, what, Identity::is_admin)
    }

    /// The details of one user (`$admins` or the user itself), or of all (`None`, `$admins`).
    pub fn details(
        &self,
        who: &Principal,
        login: Option<&str>,
    ) -> Result<Vec<UserDetails>, AuthError> {
        let is_self = matches!((who, login), (Principal::User(u), Some(l)) if u.login == l);
        if !is_self {
            self.check_admin(who, "read user details")?;
        } else if matches!(who, Principal::Anonymous) {
            return Err(access::unauthenticated("", "read user details"));
        }
        let users = self.users.read();
        match login {
            Some(l) => users
                .map
                .get(l)
                .map(|e| vec![UserDetails::from(&e.record)])
                .ok_or_else(|| AuthError::UserNotFound(l.to_owned())),
            None => {
                let mut all: Vec<UserDetails> = users
                    .map
                    .values()
                    .map(|e| UserDetails::from(&e.record))
                    .collect();
                all.sort_by(|a, b| a.login.cmp(&b.login));
                Ok(all)
            }
        }
    }

    /// Creates a user (`$admins`).
    pub async fn create_user(
        &self,
        who: &Principal,
        login: &str,
        full_name: &str,
        groups: Vec<String>,
        password: String,
    ) -> Result<(), AuthError> {
        self.check_admin(who, "create user")?;
        self.create_user_unchecked(login, full_name, groups, password)
            .await?;
        tracing::info!(target: AUDIT_TARGET, user = who.name(), login, "user created");
        Ok(())
    }

    async fn create_user_unchecked(
        &self,
        login: &str,
        full_name: &str,
        groups: Vec<String>,
        password: String,
    ) -> Result<(), AuthError> {
        users::check_login(login)?;
        users::check_groups(&groups)?;
        let password_hash = self.passwords.hash(password).await?;
        let _write = self.writes.lock().await;
        let expected = {
            let users = self.users.read();
            if users.map.contains_key(login) {
                return Err(AuthError::UserExists(login.to_owned()));
            }
            users.last_revision
        };
        let record = UserRecord {
            login: login.to_owned(),
            full_name: full_name.to_owned(),
            groups,
            disabled: false,
            password_hash,
            updated_nanos: users::now_nanos(),
        };
        let revision = users::write_record(&self.engine, expected, &record).await?;
        self.users
            .write()
            .apply(revision, users::UserChange::Put(record));
        Ok(())
    }

    /// Replaces a user's full name and groups, and its password if one is given (`$admins`).
    pub async fn update_user(
        &self,
        who: &Principal,
        login: &str,
        full_name: &str,
        groups: Vec<String>,
        password: Option<String>,
    ) -> Result<(), AuthError> {
        self.check_admin(who, "update user")?;
        users::check_groups(&groups)?;
        let change = Change::Update {
            full_name: full_name.to_owned(),
            groups,
            password,
        };
        self.change(login, change).await?;
        tracing::info!(target: AUDIT_TARGET, user = who.name(), login, "user updated");
        Ok(())
    }

    /// Enables or disables a user (`$admins`). A disabled user's requests are refused from the
    /// next one on.
    pub async fn set_enabled(
        &self,
        who: &Principal,
        login: &str,
        enabled: bool,
    ) -> Result<(), AuthError> {
        self.check_admin(
            who,
            if enabled {
                "enable user"
            } else {
                "disable user"
            },
        )?;
        self.change(login, Change::Enabled(enabled)).await?;
        tracing::info!(target: AUDIT_TARGET, user = who.name(), login, enabled, "user enabled or disabled");
        Ok(())
    }

    /// Sets a user's password without the current one (`$admins`).
    pub async fn reset_password(
        &self,
        who: &Principal,
        login: &str,
        new_password: String,
    ) -> Result<(), AuthError> {
        self.check_admin(who, "reset password")?;
        self.change(login, Change::Password(new_password)).await?;
        tracing::info!(target: AUDIT_TARGET, user = who.name(), login, "password reset");
        Ok(())
    }

    /// Changes a user's password given the current one: the user itself, or an admin.
    pub async fn change_password(
        &self,
        who: &Principal,
        login: &str,
        current: String,
        new_password: String,
    ) -> Result<(), AuthError> {
        let is_self = matches!(who, Principal::User(u) if u.login == login);
        if !is_self {
            self.check_admin(who, "change another user's password")?;
        }
        let phc = self
            .users
            .read()
            .map
            .get(login)
            .map(|e| e.record.password_hash.clone())
            .ok_or_else(|| AuthError::UserNotFound(login.to_owned()))?;
        if !self.limiter.attempt(login, None, Instant::now()) {
            tracing::warn!(target: AUDIT_TARGET, user = who.name(), login, "password change refused: too many failed tries");
            return Err(AuthError::AccessDenied);
        }
        if self.passwords.verify(phc, current).await? {
            self.limiter.succeeded(login, None, Instant::now());
        } else {
            tracing::warn!(target: AUDIT_TARGET, user = who.name(), login, "password change refused: wrong current password");
            return Err(AuthError::AccessDenied);
        }
        self.change(login, Change::Password(new_password)).await?;
        tracing::info!(target: AUDIT_TARGET, user = who.name(), login, "password changed");
        Ok(())
    }

    /// Deletes a user (`$admins`).
    pub async fn delete_user(&self, who: &Principal, login: &str) -> Result<(), AuthError> {
        self.check_admin(who, "delete user")?;
        let _write = self.writes.lock().await;
        let expected = {
            let users = self.users.read();
            if !users.map.contains_key(login) {
                return Err(AuthError::UserNotFound(login.to_owned()));
            }
            users.last_revision
        };
        let revision = users::write_deleted(&self.engine, expected, login).await?;
        self.users
            .write()
            .apply(revision, users::UserChange::Remove(login.to_owned()));
        tracing::info!(target: AUDIT_TARGET, user = who.name(), login, "user deleted");
        Ok(())
    }

    async fn change(&self, login: &str, change: Change) -> Result<(), AuthError> {
        let new_hash = match &change {
            Change::Password(p)
            | Change::Update {
                password: Some(p), ..
            } => Some(self.passwords.hash(p.clone()).await?),
            _ => None,
        };
        let _write = self.writes.lock().await;
        let (mut record, expected) = {
            let users = self.users.read();
            let e = users
                .map
                .get(login)
                .ok_or_else(|| AuthError::UserNotFound(login.to_owned()))?;
            (e.record.clone(), users.last_revision)
        };
        match change {
            Change::Update {
                full_name, groups, ..
            } => {
                record.full_name = full_name;
                record.groups = groups;
            }
            Change::Enabled(enabled) => record.disabled = !enabled,
            Change::Password(_) => {}
        }
        if let Some(h) = new_hash {
            record.password_hash = h;
        }
        record.updated_nanos = users::now_nanos();
        let revision = users::write_record(&self.engine, expected, &record).await?;
        self.users
            .write()
            .apply(revision, users::UserChange::Put(record));
        Ok(())
    }

    /// Passwords checked against their stored hash since open: requests answered from the
    /// credential cache do not count.
    pub fn hash_verifications(&self) -> u64 {
        self.passwords.verifications()
    }

    /// The default access lists in force.
    pub fn defaults(&self) -> Arc<AclDefaults> {
        Arc::clone(&self.defaults.read())
    }
}

/// Splits an HTTP basic `Authorization` value into login and password.
fn parse_basic(header: &[u8]) -> Result<(String, String), AuthError> {
    let bad = |why: &str| AuthError::Unauthenticated(format!("bad Authorization header: {why}"));
    if header.len() > AUTHORIZATION_BYTES_MAX {
        return Err(bad("too long"));
    }
    let text = std::str::from_utf8(header).map_err(|_| bad("not UTF-8"))?;
    let (scheme, rest) = text
        .trim()
        .split_once(' ')
        .ok_or_else(|| bad("no scheme"))?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(bad("only Basic credentials are accepted"));
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .map_err(|_| bad("not base64"))?;
    let pair = String::from_utf8(raw).map_err(|_| bad("not UTF-8"))?;
    let (login, password) = pair.split_once(':').ok_or_else(|| bad("no ':'"))?;
    Ok((login.to_owned(), password.to_owned()))
}

/// `$settings`' defaults and its last revision; built-in defaults when it has none or they do
/// not parse (with a warning: a bad `$settings` must not lock everyone out).
fn read_settings(engine: &Engine) -> Result<(AclDefaults, Option<u64>), AuthError> {
    let stream = settings_stream();
    match engine.last_event(&stream)? {
        None => Ok((AclDefaults::default(), None)),
        Some(e) => Ok((parse_settings(&e.data), Some(e.revision.0))),
    }
}

fn parse_settings(json: &[u8]) -> AclDefaults {
    AclDefaults::parse(json).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "$settings does not parse; using the built-in access defaults");
        AclDefaults::default()
    })
}

fn settings_stream() -> StreamName {
    StreamName::new(SETTINGS_STREAM).unwrap_or_else(|_| unreachable!("valid stream name"))
}

/// Follows `$settings` after revision `after` and applies each new last event's defaults.
async fn follow_settings(auth: Arc<Auth>, after: Option<u64>) {
    let from = Revision(after.map_or(0, |r| r + 1));
    let mut sub = match auth.engine.subscribe_stream(&settings_stream(), from) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot follow $settings; access defaults stay as loaded");
            return;
        }
    };
    loop {
        match sub.next_page().await {
            Ok(page) => {
                if let Some(last) = page.events.last() {
                    let defaults = parse_settings(&last.event.data);
                    *auth.defaults.write() = Arc::new(defaults);
                    tracing::info!(
                        revision = last.event.revision.0,
                        "applied new access defaults from $settings"
                    );
                }
            }
            Err(EngineError::Stopped(_)) => return,
            Err(EngineError::Domain(DomainError::StreamDeleted { .. })) => {
                *auth.defaults.write() = Arc::new(AclDefaults::default());
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "following $settings failed; access defaults stay as they are");
                return;
            }
        }
    }
}

/// Follows the users stream after revision `after` and applies each change this server did not
/// make itself: with the store in PostgreSQL, another node's user changes reach this one here.
async fn follow_users(auth: Arc<Auth>, after: Option<u64>) {
    let from = Revision(after.map_or(0, |r| r + 1));
    let mut sub = match auth.engine.subscribe_stream(&users::users_stream(), from) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot follow the users stream; users stay as loaded");
            return;
        }
    };
    loop {
        match sub.next_page().await {
            Ok(page) => {
                let mut users = auth.users.write();
                for e in page.events.iter() {
                    if let Some(change) = users::change_of(&e.event) {
                        users.apply(e.event.revision.0, change);
                    }
                }
            }
            Err(EngineError::Stopped(_)) => return,
            Err(e) => {
                tracing::error!(error = %e, "following the users stream failed; users stay as they are");
                return;
            }
        }
    }
}

/// Whether `who` may run the admin command `what`, given who among users may; logged to the
/// audit target either way.
fn admin_command(who: &Principal, what: &str, may: fn(&Identity) -> bool) -> Result<(), AuthError> {
    match who {
        Principal::Open => Ok(()),
        Principal::Anonymous => Err(access::unauthenticated("", what)),
        Principal::User(u) if may(u) => {
            tracing::info!(target: AUDIT_TARGET, user = %u.login, what, "admin command");
            Ok(())
        }
        Principal::User(_) => Err(access::denied(who, "", what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_parse_and_bad_ones_are_refused() {
        let h = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("ann:pa:ss")
        );
        assert_eq!(
            parse_basic(h.as_bytes()).unwrap(),
            ("ann".to_owned(), "pa:ss".to_owned())
        );
        for bad in ["Bearer x", "Basic !!!", "Basic", "Basic YW5u"] {
            assert!(
                matches!(
                    parse_basic(bad.as_bytes()),
                    Err(AuthError::Unauthenticated(_))
                ),
                "{bad}"
            );
        }
        assert!(parse_basic(&vec![b'a'; AUTHORIZATION_BYTES_MAX + 1]).is_err());
    }
}
