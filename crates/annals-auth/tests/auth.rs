//! Users, credentials and access decisions over a real engine on a temporary directory.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail the test by panicking"
)]

use std::net::IpAddr;

use annals_auth::{ADMIN_LOGIN, Auth, AuthError, FAILURES_BURST, Principal};
use annals_core::{ExpectedRevision, NewEvent, StreamName, StreamRight};
use annals_engine::{Engine, EngineConfig};
use base64::Engine as _;

fn basic(login: &str, password: &str) -> Vec<u8> {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{login}:{password}"))
    )
    .into_bytes()
}

/// Opens the store in `dir`, waiting for a closed engine's last handles (the `$settings`
/// follower's) to let go of the directory.
fn open(dir: &std::path::Path) -> Engine {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Engine::open_dir(dir, EngineConfig::default()) {
            Ok((engine, _)) => return engine,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("cannot open the store: {e}"),
        }
    }
}

async fn login(auth: &Auth, user: &str, password: &str) -> Result<Principal, AuthError> {
    auth.authenticate(Some(&basic(user, password)), None).await
}

async fn set_metadata(engine: &Engine, stream: &str, json: serde_json::Value) {
    engine
        .set_metadata_async(&StreamName::new(stream).unwrap(), &json)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_start_needs_an_admin_password_and_users_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    assert!(matches!(
        Auth::open(engine.clone(), None).await,
        Err(AuthError::NoAdminPassword)
    ));
    let auth = Auth::open(engine.clone(), Some("changeit".to_owned()))
        .await
        .unwrap();
    let admin = login(&auth, ADMIN_LOGIN, "changeit").await.unwrap();
    auth.create_user(
        &admin,
        "ann",
        "Ann",
        vec!["sales".to_owned()],
        "s3cret".to_owned(),
    )
    .await
    .unwrap();
    assert!(matches!(
        auth.create_user(&admin, "ann", "Ann", vec![], "x".to_owned())
            .await,
        Err(AuthError::UserExists(_))
    ));
    auth.set_enabled(&admin, "ann", false).await.unwrap();
    drop(auth);
    engine.close();
    drop(engine);

    // Reopened without a password: the users are in the log, and the hash is what is stored.
    let engine = open(dir.path());
    let auth = Auth::open(engine.clone(), None).await.unwrap();
    let admin = login(&auth, ADMIN_LOGIN, "changeit").await.unwrap();
    let details = auth.details(&admin, Some("ann")).unwrap();
    assert_eq!(details[0].groups, vec!["sales".to_owned()]);
    assert!(details[0].disabled);
    let all = auth.details(&admin, None).unwrap();
    assert_eq!(
        all.iter().map(|d| d.login.as_str()).collect::<Vec<_>>(),
        vec!["admin", "ann"]
    );
    let stored = engine
        .read_stream(
            &StreamName::new(annals_auth::users::USERS_STREAM).unwrap(),
            annals_core::Revision(0),
            annals_core::Direction::Forwards,
            100,
        )
        .unwrap();
    for e in &stored {
        let text = String::from_utf8_lossy(&e.data);
        assert!(
            !text.contains("changeit") && !text.contains("s3cret"),
            "{text}"
        );
    }
    assert!(matches!(
        login(&auth, "ann", "s3cret").await,
        Err(AuthError::Unauthenticated(_))
    ));
    engine.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_credentials_are_cached_and_every_change_to_the_user_drops_them() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let auth = Auth::open(engine.clone(), Some("changeit".to_owned()))
        .await
        .unwrap();
    let admin = login(&auth, ADMIN_LOGIN, "changeit").await.unwrap();
    auth.create_user(&admin, "ann", "Ann", vec![], "one".to_owned())
        .await
        .unwrap();
    let before = auth.hash_verifications();
    for _ in 0..50 {
        let p = login(&auth, "ann", "one").await.unwrap();
        assert!(matches!(&p, Principal::User(u) if u.login == "ann"));
    }
    assert_eq!(
        auth.hash_verifications() - before,
        1,
        "one hash, then the cache"
    );

    // A password change: the old password is refused at once, the new one works.
    let ann = login(&auth, "ann", "one").await.unwrap();
    auth.change_password(&ann, "ann", "one".to_owned(), "two".to_owned())
        .await
        .unwrap();
    assert!(login(&auth, "ann", "one").await.is_err());
    assert!(login(&auth, "ann", "two").await.is_ok());

    // Disabled: refused even with the cached credential; enabled again: accepted.
    auth.set_enabled(&admin, "ann", false).await.unwrap();
    assert!(matches!(
        login(&auth, "ann", "two").await,
        Err(AuthError::Unauthenticated(_))
    ));
    auth.set_enabled(&admin, "ann", true).await.unwrap();
    assert!(login(&auth, "ann", "two").await.is_ok());

    // Reset by an operator, then groups changed: the identity carries the new groups.
    auth.reset_password(&admin, "ann", "three".to_owned())
        .await
        .unwrap();
    assert!(login(&auth, "ann", "two").await.is_err());
    auth.update_user(&admin, "ann", "Ann B", vec!["$ops".to_owned()], None)
        .await
        .unwrap();
    let ann = login(&auth, "ann", "three").await.unwrap();
    assert!(matches!(&ann, Principal::User(u) if u.is_operator()));

    // Deleted: refused.
    auth.delete_user(&admin, "ann").await.unwrap();
    assert!(login(&auth, "ann", "three").await.is_err());
    assert!(matches!(
        auth.details(&admin, Some("ann")),
        Err(AuthError::UserNotFound(_))
    ));
    engine.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_rate_limited_without_hashing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let auth = Auth::open(engine.clone(), Some("changeit".to_owned()))
        .await
        .unwrap();
    let addr: IpAddr = "192.0.2.7".parse().unwrap();
    let before = auth.hash_verifications();
    let started = std::time::Instant::now();
    // Sent all at once, as a guessing client would: each takes its token before it hashes, so
    // the burst is all that gets hashed however slow the hashes are.
    let tries = FAILURES_BURST as u64 + 40;
    // Each a different password, as guesses are (the same one at once is checked once).
    let attempts: Vec<_> = (0..tries)
        .map(|i| {
            let auth = auth.clone();
            tokio::spawn(async move {
                auth.authenticate(Some(&basic(ADMIN_LOGIN, &format!("wrong-{i}"))), Some(addr))
                    .await
            })
        })
        .collect();
    for a in attempts {
        assert!(matches!(
            a.await.unwrap(),
            Err(AuthError::Unauthenticated(_))
        ));
    }
    let hashed = auth.hash_verifications() - before;
    // The burst, plus what refilled meanwhile: the tries start at once, so this is the burst
    // unless the machine is slow enough to delay them (without the limiter all 50 are hashed).
    let refilled = started.elapsed().as_secs_f64() * annals_auth::FAILURE_REFILL_PER_SEC;
    let allowed = FAILURES_BURST + refilled.ceil();
    assert!(
        (hashed as f64) <= allowed && hashed >= FAILURES_BURST as u64,
        "{hashed} hashes for {tries} wrong passwords (allowed {allowed})"
    );
    // (That a try is refused with the bucket empty whatever its password, before any hash, is
    // the limiter's unit test: here the hashes take seconds, and the bucket refills meanwhile.)
    engine.close();
}

/// A client that opens many connections at once with the same credentials (more than the
/// failed-login burst) gets them all, for one hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_logins_at_once_with_the_same_credentials_cost_one_hash() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let auth = Auth::open(engine.clone(), Some("changeit".to_owned()))
        .await
        .unwrap();
    let addr: IpAddr = "192.0.2.9".parse().unwrap();
    let before = auth.hash_verifications();
    let logins: Vec<_> = (0..(3 * FAILURES_BURST as usize))
        .map(|_| {
            let auth = auth.clone();
            tokio::spawn(async move {
                auth.authenticate(Some(&basic(ADMIN_LOGIN, "changeit")), Some(addr))
                    .await
            })
        })
        .collect();
    for l in logins {
        assert!(matches!(l.await.unwrap(), Ok(Principal::User(_))));
    }
    assert_eq!(auth.hash_verifications() - before, 1);
    engine.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lists_defaults_and_settings_decide_stream_rights() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let auth = Auth::open(engine.clone(), Some("changeit".to_owned()))
        .await
        .unwrap();
    let admin = login(&auth, ADMIN_LOGIN, "changeit").await.unwrap();
    auth.create_user(&admin, "ann", "", vec!["sales".to_owned()], "a".to_owned())
        .await
        .unwrap();
    auth.create_user(&admin, "bob", "", vec!["$ops".to_owned()], "b".to_owned())
        .await
        .unwrap();
    let ann = login(&auth, "ann", "a").await.unwrap();
    let bob = login(&auth, "bob", "b").await.unwrap();
    let denied = |r: Result<(), AuthError>| matches!(r, Err(AuthError::AccessDenied));

    // Built-in defaults: user streams open to users, system streams and $all to admins.
    assert!(
        auth.check_stream(&ann, "orders-1", StreamRight::Write)
            .is_ok()
    );
    assert!(denied(auth.check_stream(&ann, "$all", StreamRight::Read)));
    assert!(denied(auth.check_stream(
        &ann,
        "$ce-orders",
        StreamRight::Read
    )));
    assert!(denied(auth.check_stream(&bob, "$users", StreamRight::Read)));
    assert!(auth.check_stream(&admin, "$all", StreamRight::Read).is_ok());
    assert!(matches!(
        auth.check_stream(&Principal::Anonymous, "orders-1", StreamRight::Read),
        Err(AuthError::Unauthenticated(_))
    ));
    assert!(
        auth.check_stream(&Principal::Open, "$users", StreamRight::Write)
            .is_ok()
    );

    // A stream's $acl: writes for sales only, reads for everyone; deletes fall back.
    set_metadata(
        &engine,
        "ledger",
        serde_json::json!({"$acl": {"$w": "sales", "$r": "$all", "$mw": "nobody"}}),
    )
    .await;
    assert!(
        auth.check_stream(&ann, "ledger", StreamRight::Write)
            .is_ok()
    );
    assert!(denied(auth.check_stream(
        &bob,
        "ledger",
        StreamRight::Write
    )));
    assert!(auth.check_stream(&bob, "ledger", StreamRight::Read).is_ok());
    assert!(
        auth.check_stream(&bob, "ledger", StreamRight::Delete)
            .is_ok()
    );
    assert!(denied(auth.check_stream(
        &ann,
        "$$ledger",
        StreamRight::Write
    )));
    assert!(
        auth.check_stream(&ann, "$$ledger", StreamRight::Read)
            .is_ok()
    );

    // $all's read right through $$$all.
    set_metadata(
        &engine,
        "$all",
        serde_json::json!({"$acl": {"$r": ["ann"]}}),
    )
    .await;
    assert!(auth.check_stream(&ann, "$all", StreamRight::Read).is_ok());
    assert!(denied(auth.check_stream(&bob, "$all", StreamRight::Read)));

    // $settings: user streams now read-only for everyone but sales; applied without a restart.
    let settings = StreamName::new("$settings").unwrap();
    let body = serde_json::json!({"$userStreamAcl": {"$w": ["sales"]}});
    engine
        .append_async(
            &settings,
            ExpectedRevision::Any,
            vec![NewEvent::json("update-default-acl", body.to_string().into_bytes()).unwrap()],
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !denied(auth.check_stream(&bob, "orders-1", StreamRight::Write)) {
        assert!(
            std::time::Instant::now() < deadline,
            "$settings never applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        auth.check_stream(&ann, "orders-1", StreamRight::Write)
            .is_ok()
    );
    assert!(
        auth.check_stream(&bob, "orders-1", StreamRight::Read)
            .is_ok()
    );

    // Operator commands: $admins and $ops only.
    assert!(
        auth.check_operator(&bob, "create subscription group")
            .is_ok()
    );
    assert!(denied(
        auth.check_operator(&ann, "create subscription group")
    ));
    assert!(denied(
        auth.create_user(&ann, "eve", "", vec![], "e".to_owned())
            .await
    ));
    // A user reads its own details; not others'.
    assert!(auth.details(&ann, Some("ann")).is_ok());
    assert!(denied(auth.details(&ann, Some("bob")).map(|_| ())));
    engine.close();
}

/// Managing users is for `$admins` only, as in KurrentDB: `$ops` runs the other admin commands,
/// but a member who could create or change users could make itself an admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_manage_users() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let auth = Auth::open(engine.clone(), Some("changeit".to_owned()))
        .await
        .unwrap();
    let admin = login(&auth, ADMIN_LOGIN, "changeit").await.unwrap();
    auth.create_user(&admin, "ops", "", vec!["$ops".to_owned()], "o".to_owned())
        .await
        .unwrap();
    let ops = login(&auth, "ops", "o").await.unwrap();
    let denied = |r: Result<(), AuthError>| matches!(r, Err(AuthError::AccessDenied));
    let admins = || vec!["$admins".to_owned()];

    assert!(
        auth.check_operator(&ops, "list subscription groups")
            .is_ok()
    );
    assert!(denied(
        auth.create_user(&ops, "mallory", "", admins(), "m".to_owned())
            .await
    ));
    assert!(denied(
        auth.update_user(&ops, "ops", "", admins(), None).await
    ));
    assert!(denied(
        auth.reset_password(&ops, ADMIN_LOGIN, "mine".to_owned())
            .await
    ));
    assert!(denied(
        auth.change_password(&ops, ADMIN_LOGIN, "changeit".to_owned(), "mine".to_owned())
            .await
    ));
    assert!(denied(auth.set_enabled(&ops, ADMIN_LOGIN, false).await));
    assert!(denied(auth.delete_user(&ops, ADMIN_LOGIN).await));
    assert!(denied(auth.details(&ops, None).map(|_| ())));
    assert!(denied(auth.details(&ops, Some(ADMIN_LOGIN)).map(|_| ())));
    // Nothing changed: no new user, the admin's password and the operator's groups as they were
    // (checks that hash no password, so as not to slow the rate-limit test beside this one).
    assert!(matches!(
        auth.details(&admin, Some("mallory")),
        Err(AuthError::UserNotFound(_))
    ));
    assert!(login(&auth, ADMIN_LOGIN, "changeit").await.is_ok());
    let ops_now = auth.details(&admin, Some("ops")).unwrap();
    assert_eq!(ops_now[0].groups, vec!["$ops".to_owned()]);
    // The operator still reads its own details; the admin reads anyone's.
    assert!(auth.details(&ops, Some("ops")).is_ok());
    assert_eq!(auth.details(&admin, None).unwrap().len(), 2);
    engine.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_user_input_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let auth = Auth::open(engine.clone(), Some("changeit".to_owned()))
        .await
        .unwrap();
    let admin = login(&auth, ADMIN_LOGIN, "changeit").await.unwrap();
    let head = engine.head();
    for (login, password) in [
        ("", "x"),
        ("$admins", "x"),
        ("a:b", "x"),
        ("a\u{1}", "x"),
        ("ok", ""),
    ] {
        let r = auth
            .create_user(&admin, login, "", vec![], password.to_owned())
            .await;
        assert!(matches!(r, Err(AuthError::Invalid(_))), "{login:?}");
    }
    assert!(matches!(
        auth.create_user(
            &admin,
            "ok",
            "",
            vec!["bad\ngroup".to_owned()],
            "x".to_owned()
        )
        .await,
        Err(AuthError::Invalid(_))
    ));
    assert!(matches!(
        auth.set_enabled(&admin, "nobody", false).await,
        Err(AuthError::UserNotFound(_))
    ));
    assert_eq!(engine.head(), head, "a refused change wrote nothing");
    engine.close();
}
