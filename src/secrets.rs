//! Small cryptographic helpers shared by the authorization server: secret hashing (argon2id),
//! random tokens, constant-time comparison, SHA-256 and HMAC-SHA256 encodings.
//!
//! Randomness, digests and MACs come from aws-lc-rs (the same library that backs TLS and JWT
//! signatures), so there is one audited source of cryptography in the process.
//!
//! At the bottom (beside `config`): imports only `config`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use aws_lc_rs::{constant_time, digest, hmac, rand};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// Tokens handed to clients (refresh tokens, codes, client secrets, CSRF tokens) carry at least this
/// many random bytes: 256 bits, as docs/design.md §4 requires.
pub const MIN_TOKEN_BYTES: usize = 32;

/// Salt length for argon2: 16 bytes is what the PHC string format recommends.
const SALT_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("could not hash the secret: {0}")]
    Hash(String),
    #[error("the system random number generator failed")]
    Random,
}

/// Hashes a client secret or user password into an argon2id PHC string
/// (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`) with the argon2 crate's default parameters (the
/// OWASP-recommended minimum) and a fresh random salt.
///
/// This takes tens of milliseconds of CPU on purpose; call it from `spawn_blocking` in async code.
pub fn hash_secret(secret: &str) -> Result<String, SecretError> {
    let mut salt = [0u8; SALT_LEN];
    rand::fill(&mut salt).map_err(|_| SecretError::Random)?;
    let hash = Argon2::default()
        .hash_password_with_salt(secret.as_bytes(), &salt)
        .map_err(|e| SecretError::Hash(e.to_string()))?;
    Ok(hash.to_string())
}

/// Checks `secret` against a PHC string made by [`hash_secret`] (or any argon2 PHC string).
///
/// The final comparison of the argon2 outputs is constant time (password-hash's `Output` compares
/// that way); the parameters come from the stored hash, never from the caller. A malformed PHC string
/// simply never matches. CPU-heavy like [`hash_secret`].
pub fn verify_secret(phc: &str, secret: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    // A hash whose parameters would cost more than the configured bound (stored hashes from before
    // the check, or written to the store by hand) never matches rather than taking gigabytes.
    match argon2::Params::try_from(&hash) {
        Ok(params) if crate::config::check::argon2_cost(&params).is_ok() => {}
        _ => return false,
    }
    Argon2::default()
        .verify_password(secret.as_bytes(), &hash)
        .is_ok()
}

/// Spends the same time as a [`verify_secret`] call that fails, for a user or client that does not
/// exist, so response times do not reveal which usernames or client ids are valid.
pub fn verify_dummy(secret: &str) {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    // Hashed once with the same default parameters as real secrets, so the cost matches.
    let dummy = DUMMY.get_or_init(|| hash_secret("tollgate-dummy-secret").ok());
    if let Some(phc) = dummy {
        let _ = verify_secret(phc, secret);
    }
}

/// Callers that may wait for a verification permit (docs/design.md §9a); the next one is turned away at once.
pub const MAX_WAITING_VERIFICATIONS: usize = 64;

/// Seconds a caller turned away by a full [`VerifierPool`] is told to wait (`Retry-After`).
pub const BUSY_RETRY_AFTER_SECS: u64 = 1;

/// All verification permits are taken and [`MAX_WAITING_VERIFICATIONS`] callers already wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("every secret verification permit is taken and the queue is full")]
pub struct Busy;

/// What the verification pool and the guessing throttles did, for `/metrics`.
#[derive(Debug, Default)]
pub struct VerifierStats {
    /// argon2 verifications run (real and dummy).
    pub verifications: AtomicU64,
    /// Callers turned away because the permits were taken and the queue was full (503).
    pub busy: AtomicU64,
    /// Logins refused by the failed-login throttle before any verification (429).
    pub throttled_logins: AtomicU64,
    /// Client authentications refused by the failed-authentication throttle (429).
    pub throttled_clients: AtomicU64,
}

/// Work for a verification thread.
type Job = Box<dyn FnOnce() + Send>;

/// Runs every argon2 verification of the process under a fixed number of permits, on as many
/// dedicated threads.
///
/// One verification holds about 19 MiB (the argon2 default `m_cost`) for tens of milliseconds; with
/// one blocking thread per request, a few hundred parallel guesses used to take gigabytes. Here at most
/// `permits` run at once, at most [`MAX_WAITING_VERIFICATIONS`] wait (a bounded queue, so a burst of
/// real logins rides through), and anyone beyond that gets [`Busy`] at once.
///
/// Why threads of its own rather than `spawn_blocking`: allocators keep freed memory per thread (glibc
/// arenas, mimalloc heaps). Spread over the blocking pool's hundreds of threads, each argon2 buffer
/// leaves its 19 MiB resident on whichever thread ran it; a flood of 400 guesses under 2 permits still
/// raised the peak RSS by 400 MiB that way. On `permits` fixed threads the memory argon2 can pin is
/// `permits × 19 MiB`, whatever arrives and whatever the allocator.
pub struct VerifierPool {
    permits: Arc<Semaphore>,
    size: usize,
    waiting: AtomicUsize,
    /// Feeds the verification threads; dropping the pool closes it and the threads end.
    jobs: std::sync::mpsc::Sender<Job>,
    pub stats: Arc<VerifierStats>,
}

impl VerifierPool {
    /// `permits` 0 means one per CPU core (argon2 is CPU-bound: more in parallel only adds memory).
    pub fn new(permits: usize) -> VerifierPool {
        let wanted = match permits {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
        .clamp(1, Semaphore::MAX_PERMITS);
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        let mut size = 0;
        for i in 0..wanted {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("tollgate-argon2-{i}"))
                .spawn(move || verification_thread(&queue));
            match spawned {
                Ok(_) => size += 1,
                Err(err) => {
                    tracing::error!(error = %err, "could not start a secret verification thread")
                }
            }
        }
        // With no thread at all every verification fails with `Busy` (the queue has no receiver):
        // 503s, never a verification that silently passes.
        VerifierPool {
            permits: Arc::new(Semaphore::new(size.max(1))),
            size,
            waiting: AtomicUsize::new(0),
            jobs,
            stats: Arc::default(),
        }
    }

    /// The number of verification threads (verifications that may run at once).
    pub fn size(&self) -> usize {
        self.size
    }

    /// Verifies `secret` against `phc`, or spends a dummy verification's work when there is no hash
    /// (an unknown user), on a verification thread under a permit. The permit moves into the job, so
    /// a caller that goes away (client disconnected) still holds it until argon2 is done: the bound is
    /// on work actually running, not on callers still waiting for it.
    pub async fn verify(&self, phc: Option<String>, secret: String) -> Result<bool, Busy> {
        let permit = self.permit().await.inspect_err(|_| {
            self.stats.busy.fetch_add(1, Ordering::Relaxed);
        })?;
        let (answer, verified) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _permit = permit;
            let ok = match phc {
                Some(phc) => verify_secret(&phc, &secret),
                None => {
                    verify_dummy(&secret);
                    false
                }
            };
            let _ = answer.send(ok);
        });
        if self.jobs.send(job).is_err() {
            self.stats.busy.fetch_add(1, Ordering::Relaxed);
            return Err(Busy);
        }
        self.stats.verifications.fetch_add(1, Ordering::Relaxed);
        // A job that panicked (argon2 has no panics on these inputs) is a failed verification.
        Ok(verified.await.unwrap_or(false))
    }

    async fn permit(&self) -> Result<OwnedSemaphorePermit, Busy> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => return Ok(permit),
            Err(TryAcquireError::Closed) => return Err(Busy),
            Err(TryAcquireError::NoPermits) => {}
        }
        // Take a place in the queue only if one is free; the check and the increment are one step,
        // so parallel callers can never push the queue past its bound.
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_WAITING_VERIFICATIONS).then_some(n + 1)
            })
            .map_err(|_| Busy)?;
        // Frees the place when the wait ends, also when the caller's future is dropped mid-wait.
        struct Place<'a>(&'a AtomicUsize);
        impl Drop for Place<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _place = Place(&self.waiting);
        self.permits.clone().acquire_owned().await.map_err(|_| Busy)
    }
}

/// Runs jobs until the pool is dropped. A panicking job is caught so the thread (and its permit's
/// share of the pool) survives it.
fn verification_thread(queue: &std::sync::Mutex<std::sync::mpsc::Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, never while running one.
        let next = queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .recv();
        let Ok(job) = next else {
            return;
        };
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

/// `n` bytes from the system CSPRNG.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    // AWS-LC's RAND_bytes aborts the process rather than return failure, so this cannot fail in
    // practice; if it ever did, there is no safe way to mint a secret, and continuing with a
    // predictable value would be far worse than stopping.
    #[allow(clippy::expect_used)]
    rand::fill(&mut buf).expect("the system random number generator failed");
    buf
}

/// A fresh opaque token: `bytes` random bytes (raised to [`MIN_TOKEN_BYTES`] if smaller, so no caller
/// can accidentally mint a guessable token), base64url without padding.
pub fn random_token(bytes: usize) -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(bytes.max(MIN_TOKEN_BYTES)))
}

/// Compares two byte strings without a data-dependent early exit. The lengths are not secret (a
/// length mismatch returns at once); to compare secrets of variable length, compare their SHA-256
/// digests instead.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// Compares a presented secret with the expected one (the admin secret) in time that depends on
/// neither their contents nor their lengths: both are hashed first, then the digests compared.
pub fn secret_eq(presented: &[u8], expected: &[u8]) -> bool {
    constant_time_eq(&sha256(presented), &sha256(expected))
}

/// The SHA-256 digest of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-256 as lowercase hex: how refresh tokens and codes are stored (only their hashes are kept).
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&sha256(data))
}

/// SHA-256 as base64url without padding: PKCE S256 and JWK thumbprints (RFC 7636, RFC 7638).
pub fn sha256_b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(sha256(data))
}

/// HMAC-SHA256 of `msg` under `key` as lowercase hex, e.g. for `X-Tollgate-Signature: sha256=<hex>`.
pub fn hmac_sha256_hex(key: &[u8], msg: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hex(hmac::sign(&key, msg).as_ref())
}

/// Base64url without padding, the encoding of every token and JOSE member.
pub fn b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify_round_trip() {
        let phc = hash_secret("correct horse battery staple").expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        assert!(verify_secret(&phc, "correct horse battery staple"));
        assert!(!verify_secret(&phc, "correct horse battery stapl"));
        assert!(!verify_secret(&phc, ""));
    }

    #[test]
    fn hashes_are_salted() {
        let a = hash_secret("same").expect("hash");
        let b = hash_secret("same").expect("hash");
        assert_ne!(a, b);
        assert!(verify_secret(&a, "same") && verify_secret(&b, "same"));
    }

    #[test]
    fn malformed_phc_never_matches() {
        assert!(!verify_secret("", ""));
        assert!(!verify_secret("not a hash", "not a hash"));
        assert!(!verify_secret("$argon2id$v=19$m=19456,t=2,p=1$", "x"));
        assert!(!verify_secret("$2b$12$abcdefghijklmnopqrstuv", "x"));
        // Near misses of a real hash of "s": never a match for "s" itself.
        let real = hash_secret("s").expect("hash");
        assert!(verify_secret(&real, "s"));
        let truncated = &real[..real.len() - 1];
        let (head, digest) = real.rsplit_once('$').expect("PHC");
        let flipped = format!(
            "{head}${}{}",
            if digest.starts_with('A') { 'B' } else { 'A' },
            &digest[1..]
        );
        let no_salt = real.replacen(real.split('$').nth(4).expect("salt"), "", 1);
        let other_algorithm = real.replacen("$argon2id$", "$argon2i$", 1);
        let costly = real.replacen("m=19456", "m=4194304", 1);
        for near in [truncated, &flipped, &no_salt, &other_algorithm, &costly] {
            assert!(!verify_secret(near, "s"), "{near}");
        }
        verify_dummy("anything"); // must not panic
    }

    /// Two permits, both held by slow work: 64 callers wait, the 65th is turned away at once, and
    /// when the permits come back the waiting callers are served.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_queues_64_and_turns_away_the_rest() {
        let pool = Arc::new(VerifierPool::new(2));
        assert_eq!(pool.size(), 2);
        let held: Vec<_> = (0..2)
            .map(|_| {
                pool.permits
                    .clone()
                    .try_acquire_owned()
                    .expect("free permit")
            })
            .collect();
        let mut waiting = tokio::task::JoinSet::new();
        for _ in 0..MAX_WAITING_VERIFICATIONS {
            let pool = pool.clone();
            waiting.spawn(async move { pool.verify(Some("not a hash".into()), "x".into()).await });
        }
        // Let every waiter take its place in the queue.
        while pool.waiting.load(Ordering::Acquire) < MAX_WAITING_VERIFICATIONS {
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.verify(None, "x".into()).await, Err(Busy));
        assert_eq!(pool.stats.busy.load(Ordering::Relaxed), 1);
        drop(held);
        while let Some(result) = waiting.join_next().await {
            assert_eq!(result.expect("task"), Ok(false));
        }
        assert_eq!(pool.waiting.load(Ordering::Acquire), 0);
        assert_eq!(
            pool.stats.verifications.load(Ordering::Relaxed),
            MAX_WAITING_VERIFICATIONS as u64
        );
    }

    #[tokio::test]
    async fn the_pool_verifies() {
        let pool = VerifierPool::new(0);
        assert!(pool.size() >= 1);
        let phc = hash_secret("s3cret").expect("hash");
        assert_eq!(
            pool.verify(Some(phc.clone()), "s3cret".into()).await,
            Ok(true)
        );
        assert_eq!(pool.verify(Some(phc), "guess".into()).await, Ok(false));
        assert_eq!(pool.verify(None, "s3cret".into()).await, Ok(false));
    }

    #[test]
    fn random_tokens_are_long_unique_and_urlsafe() {
        let a = random_token(32);
        let b = random_token(32);
        assert_ne!(a, b);
        assert_eq!(a.len(), 43); // 32 bytes → 43 base64url characters, no padding
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        // Smaller requests are raised to the minimum.
        assert_eq!(random_token(4).len(), 43);
        assert_eq!(random_token(48).len(), 64);
    }

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(secret_eq(b"admin-secret", b"admin-secret"));
        assert!(!secret_eq(b"admin-secre", b"admin-secret"));
        assert!(!secret_eq(b"", b"admin-secret"));
    }

    #[test]
    fn sha256_known_answers() {
        // FIPS 180-2 "abc" vector.
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha256_b64url(b"abc"),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn hmac_known_answer() {
        // RFC 4231 test case 2.
        assert_eq!(
            hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
