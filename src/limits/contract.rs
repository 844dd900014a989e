//! The one contract suite for every `Limiter` backend (memory now, Redis too): the same behaviours,
//! with keys unique to each run so backends may share a server.
//!
//! Periods pass on the backend's own clock ([`Time`]): the memory limiter runs on a manual clock that
//! the suite moves forward, so no test sleeps there. The Redis limiter counts on Redis's clock (`TIME`
//! inside its scripts, so that nodes with different clocks agree) and ignores ours: for it the suite
//! waits the period out in real time. Those waits only make time pass; no bound on them decides
//! anything.

use std::sync::Arc;
use std::time::Duration;

use super::{Limiter, Refused};
use crate::clock::ManualClock;
use crate::config::{OnStorageError, Quota, RateLimit};

/// How time passes for the backend under test.
pub enum Time {
    /// The backend reads a clock we do not control (Redis `TIME`): wait in real time.
    Real,
    /// The backend's rate clock is this manual clock; its quota time is `start` + the clock's
    /// whole seconds.
    Manual { clock: ManualClock, start: u64 },
}

impl Time {
    /// A manual clock, with quota time starting at the wall clock's now.
    pub fn manual(clock: ManualClock) -> Time {
        Time::Manual {
            clock,
            start: crate::clock::now(),
        }
    }

    /// The `now_secs` to pass to the limiter.
    pub fn now(&self) -> u64 {
        match self {
            Time::Real => crate::clock::now(),
            Time::Manual { clock, start } => start + clock.elapsed().as_secs(),
        }
    }

    /// Lets `d` pass for the backend.
    pub async fn pass(&self, d: Duration) {
        match self {
            Time::Real => tokio::time::sleep(d).await,
            Time::Manual { clock, .. } => clock.advance(d),
        }
    }
}

fn key(name: &str) -> String {
    format!("contract:{name}:{}", crate::secrets::random_token(8))
}

/// A rate limit of `n` per `per` that falls back to the local limiter (the suite's and other tests').
pub fn rate(n: u32, per: Duration) -> RateLimit {
    RateLimit {
        rate: n,
        per,
        on_storage_error: OnStorageError::Local,
        exact: false,
    }
}

pub async fn burst_then_refuse_with_retry_after(limiter: Arc<dyn Limiter>, time: &Time) {
    let k = key("burst");
    let r = rate(3, Duration::from_secs(60));
    for expected in [2, 1, 0] {
        let d = limiter.check(&k, Some(&r), None, time.now()).await.unwrap();
        assert_eq!(d.refused, None);
        assert_eq!(d.rate.unwrap().remaining, expected);
        assert_eq!(d.rate.unwrap().limit, 3);
    }
    let d = limiter.check(&k, Some(&r), None, time.now()).await.unwrap();
    match d.refused {
        Some(Refused::RateLimit { retry_after_secs }) => {
            assert!((1..=20).contains(&retry_after_secs))
        }
        other => panic!("expected a rate-limit refusal, got {other:?}"),
    }
}

pub async fn keys_are_independent(limiter: Arc<dyn Limiter>, time: &Time) {
    let (a, b) = (key("a"), key("b"));
    let r = rate(1, Duration::from_secs(60));
    assert_eq!(
        limiter
            .check(&a, Some(&r), None, time.now())
            .await
            .unwrap()
            .refused,
        None
    );
    assert!(
        limiter
            .check(&a, Some(&r), None, time.now())
            .await
            .unwrap()
            .refused
            .is_some()
    );
    assert_eq!(
        limiter
            .check(&b, Some(&r), None, time.now())
            .await
            .unwrap()
            .refused,
        None
    );
}

pub async fn the_rate_recovers_and_refusals_do_not_count(limiter: Arc<dyn Limiter>, time: &Time) {
    let k = key("recover");
    let r = rate(2, Duration::from_millis(600));
    for _ in 0..2 {
        assert_eq!(
            limiter
                .check(&k, Some(&r), None, time.now())
                .await
                .unwrap()
                .refused,
            None
        );
    }
    // Hammering while refused must not push recovery further out.
    for _ in 0..20 {
        assert!(
            limiter
                .check(&k, Some(&r), None, time.now())
                .await
                .unwrap()
                .refused
                .is_some()
        );
    }
    time.pass(Duration::from_millis(700)).await;
    assert_eq!(
        limiter
            .check(&k, Some(&r), None, time.now())
            .await
            .unwrap()
            .refused,
        None
    );
}

pub async fn quota_counts_until_max_then_refuses(limiter: Arc<dyn Limiter>, time: &Time) {
    let k = key("quota");
    let q = Quota {
        max: 2,
        period: Duration::from_secs(3600),
    };
    assert_eq!(
        limiter
            .check(&k, None, Some(&q), time.now())
            .await
            .unwrap()
            .quota
            .unwrap()
            .remaining,
        1
    );
    assert_eq!(
        limiter
            .check(&k, None, Some(&q), time.now())
            .await
            .unwrap()
            .quota
            .unwrap()
            .remaining,
        0
    );
    let refused = limiter.check(&k, None, Some(&q), time.now()).await.unwrap();
    match refused.refused {
        Some(Refused::Quota { retry_after_secs }) => {
            assert!((1..=3600).contains(&retry_after_secs))
        }
        other => panic!("expected a quota refusal, got {other:?}"),
    }
    assert_eq!(
        limiter
            .peek(&k, None, Some(&q), time.now())
            .await
            .unwrap()
            .quota
            .unwrap()
            .remaining,
        0
    );
}

pub async fn quota_resets_after_its_period(limiter: Arc<dyn Limiter>, time: &Time) {
    let k = key("quota-reset");
    let q = Quota {
        max: 1,
        period: Duration::from_secs(1),
    };
    assert_eq!(
        limiter
            .check(&k, None, Some(&q), time.now())
            .await
            .unwrap()
            .refused,
        None
    );
    assert!(
        limiter
            .check(&k, None, Some(&q), time.now())
            .await
            .unwrap()
            .refused
            .is_some()
    );
    // Well past the 1 s window: on Redis the window ends on Redis's clock and the node's lease of
    // quota units on its own, so the real wait keeps a margin; on the manual clock it costs nothing.
    time.pass(Duration::from_millis(2100)).await;
    assert_eq!(
        limiter
            .check(&k, None, Some(&q), time.now())
            .await
            .unwrap()
            .refused,
        None
    );
}

pub async fn a_rate_refusal_does_not_count_against_the_quota(
    limiter: Arc<dyn Limiter>,
    time: &Time,
) {
    let k = key("rate-vs-quota");
    let r = rate(1, Duration::from_secs(60));
    let q = Quota {
        max: 10,
        period: Duration::from_secs(3600),
    };
    limiter
        .check(&k, Some(&r), Some(&q), time.now())
        .await
        .unwrap();
    for _ in 0..3 {
        assert!(
            limiter
                .check(&k, Some(&r), Some(&q), time.now())
                .await
                .unwrap()
                .refused
                .is_some()
        );
    }
    assert_eq!(
        limiter
            .peek(&k, None, Some(&q), time.now())
            .await
            .unwrap()
            .quota
            .unwrap()
            .remaining,
        9
    );
}

pub async fn a_quota_refusal_does_not_use_a_rate_slot(limiter: Arc<dyn Limiter>, time: &Time) {
    let k = key("quota-vs-rate");
    let r = rate(2, Duration::from_secs(3600));
    let q = Quota {
        max: 1,
        period: Duration::from_secs(3600),
    };
    assert_eq!(
        limiter
            .check(&k, Some(&r), Some(&q), time.now())
            .await
            .unwrap()
            .refused,
        None
    );
    for _ in 0..3 {
        let d = limiter
            .check(&k, Some(&r), Some(&q), time.now())
            .await
            .unwrap();
        assert!(matches!(d.refused, Some(Refused::Quota { .. })), "{d:?}");
    }
    let d = limiter.check(&k, Some(&r), None, time.now()).await.unwrap();
    assert_eq!(d.refused, None, "the second rate slot is still there");
}

/// A policy's rate limit changed through the admin API: the next check with the raised limit passes
/// at once, although the session exhausted the old one a moment ago (each limit keeps its own GCRA
/// state, so a changed limit starts from a full burst), and the quota counted under the same key goes
/// on counting across the change.
pub async fn a_changed_rate_applies_to_the_next_check(limiter: Arc<dyn Limiter>, time: &Time) {
    let k = key("raised");
    let old = rate(2, Duration::from_secs(60));
    let quota = Quota {
        max: 100,
        period: Duration::from_secs(3600),
    };
    for _ in 0..2 {
        let d = limiter
            .check(&k, Some(&old), Some(&quota), time.now())
            .await
            .unwrap();
        assert_eq!(d.refused, None);
    }
    let d = limiter
        .check(&k, Some(&old), Some(&quota), time.now())
        .await
        .unwrap();
    assert!(
        matches!(d.refused, Some(Refused::RateLimit { .. })),
        "{d:?}"
    );

    let raised = rate(5, Duration::from_secs(60));
    let d = limiter
        .check(&k, Some(&raised), Some(&quota), time.now())
        .await
        .unwrap();
    assert_eq!(
        d.refused, None,
        "the raised limit applies to the next check"
    );
    assert_eq!(d.rate.unwrap().limit, 5);
    assert_eq!(
        d.quota.unwrap().remaining,
        100 - 3,
        "the quota kept counting"
    );
    for _ in 0..4 {
        let d = limiter
            .check(&k, Some(&raised), Some(&quota), time.now())
            .await
            .unwrap();
        assert_eq!(d.refused, None);
    }
    let d = limiter
        .check(&k, Some(&raised), Some(&quota), time.now())
        .await
        .unwrap();
    assert!(
        matches!(d.refused, Some(Refused::RateLimit { .. })),
        "the raised limit is enforced too: {d:?}"
    );
}

/// One `#[tokio::test]` per contract function for a backend.
///
/// - `limiter_contract_tests!(async { limiter })`: a backend on a clock we do not control (Redis):
///   periods pass in real time.
/// - `limiter_contract_tests!(manual_clock: |clock| async { limiter })`: a backend whose rate
///   periods pass on the given [`crate::clock::Clock`]; the suite advances it instead of sleeping.
#[macro_export]
macro_rules! limiter_contract_tests {
    (manual_clock: $factory:expr) => {
        $crate::limiter_contract_tests!(@all async {
            let (clock, manual) = $crate::clock::Clock::manual();
            let limiter: std::sync::Arc<dyn $crate::limits::Limiter> = ($factory)(clock).await;
            (limiter, $crate::limits::contract::Time::manual(manual))
        });
    };
    (@all $setup:expr) => {
        $crate::limiter_contract_tests!(@each $setup;
            burst_then_refuse_with_retry_after,
            keys_are_independent,
            the_rate_recovers_and_refusals_do_not_count,
            quota_counts_until_max_then_refuses,
            quota_resets_after_its_period,
            a_rate_refusal_does_not_count_against_the_quota,
            a_quota_refusal_does_not_use_a_rate_slot,
            a_changed_rate_applies_to_the_next_check,
        );
    };
    (@each $setup:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (limiter, time) = $setup.await;
                $crate::limits::contract::$name(limiter, &time).await;
            }
        )*
    };
    ($factory:expr) => {
        $crate::limiter_contract_tests!(@all async {
            let limiter: std::sync::Arc<dyn $crate::limits::Limiter> = $factory.await;
            (limiter, $crate::limits::contract::Time::Real)
        });
    };
}
