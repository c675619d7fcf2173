//! Passwords: argon2id hashes in PHC form for storage, and the keyed digest that remembers a
//! verified password in memory so a request with cached credentials costs one SHA-256, not a hash.
//!
//! Hashing and verifying take tens of milliseconds of CPU each, so they run on the blocking pool,
//! at most [`HASHES_CONCURRENT`] at a time: wrong passwords sent in a flood wait their turn
//! instead of taking every core.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::AuthError;

/// Password hashes computed at once; more wait.
pub const HASHES_CONCURRENT: usize = 2;
/// The longest password accepted, in bytes (argon2 takes any length; bounding it bounds the work).
pub const PASSWORD_BYTES_MAX: usize = 1024;

/// The argon2id parameters of new hashes: OWASP's first recommended setting (19 MiB, 2 passes,
/// one lane). Stored hashes carry their own parameters, so changing these re-hashes nobody.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes and verifies passwords, and digests verified ones for the cache.
#[derive(Debug)]
pub(crate) struct Passwords {
    /// Random per process: a digest in memory says nothing outside it.
    key: [u8; 32],
    slots: Semaphore,
    /// Passwords checked against a stored hash so far (the cost the cache saves).
    verified: std::sync::atomic::AtomicU64,
}

/// A keyed digest of a verified password.
pub(crate) type PasswordDigest = [u8; 32];

impl Passwords {
    pub(crate) fn new() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self {
            key,
            slots: Semaphore::new(HASHES_CONCURRENT),
            verified: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The digest a verified `password` of `login` is remembered by.
    pub(crate) fn digest(&self, login: &str, password: &str) -> PasswordDigest {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update((login.len() as u64).to_le_bytes());
        h.update(login.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// An argon2id PHC string for `password`, with a fresh salt.
    pub(crate) async fn hash(&self, password: String) -> Result<String, AuthError> {
        check_password(&password)?;
        let _slot = self.slots.acquire().await.map_err(|_| closed())?;
        tokio::task::spawn_blocking(move || {
            let mut salt = [0u8; 16];
            rand::rng().fill_bytes(&mut salt);
            let salt = SaltString::encode_b64(&salt)
                .map_err(|e| AuthError::Internal(format!("salt: {e}")))?;
            argon2()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| AuthError::Internal(format!("hashing a password: {e}")))
        })
        .await
        .map_err(|e| AuthError::Internal(format!("hashing task: {e}")))?
    }

    /// Whether `password` matches the stored `phc` hash.
    pub(crate) async fn verify(&self, phc: String, password: String) -> Result<bool, AuthError> {
        if password.len() > PASSWORD_BYTES_MAX {
            return Ok(false);
        }
        let _slot = self.slots.acquire().await.map_err(|_| closed())?;
        self.verified
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let Ok(parsed) = PasswordHash::new(&phc) else {
                tracing::error!("a stored password hash does not parse; refusing the login");
                return false;
            };
            argon2()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .await
        .map_err(|e| AuthError::Internal(format!("verifying task: {e}")))
    }
}

impl Passwords {
    /// Passwords checked against a stored hash so far.
    pub(crate) fn verifications(&self) -> u64 {
        self.verified.load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn closed() -> AuthError {
    AuthError::Internal("password hashing is shut down".to_owned())
}

/// What a new password must be: not empty, not over [`PASSWORD_BYTES_MAX`].
pub(crate) fn check_password(password: &str) -> Result<(), AuthError> {
    if password.is_empty() {
        return Err(AuthError::Invalid("a password cannot be empty".to_owned()));
    }
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(AuthError::Invalid(format!(
            "a password is at most {PASSWORD_BYTES_MAX} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let p = Passwords::new();
        let phc = p.hash("changeit".to_owned()).await.unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(!phc.contains("changeit"));
        assert!(p.verify(phc.clone(), "changeit".to_owned()).await.unwrap());
        assert!(!p.verify(phc.clone(), "changeiT".to_owned()).await.unwrap());
        assert!(
            !p.verify("garbage".to_owned(), "changeit".to_owned())
                .await
                .unwrap()
        );
        let again = p.hash("changeit".to_owned()).await.unwrap();
        assert_ne!(phc, again, "each hash has its own salt");
    }

    #[test]
    fn digests_depend_on_login_password_and_process_key() {
        let p = Passwords::new();
        assert_eq!(p.digest("a", "b"), p.digest("a", "b"));
        assert_ne!(p.digest("a", "b"), p.digest("a", "c"));
        assert_ne!(p.digest("ab", ""), p.digest("a", "b"));
        assert_ne!(p.digest("a", "b"), Passwords::new().digest("a", "b"));
    }
}
