//! CloudStack's API rate limit per account (`api.throttling.*`), as its
//! `ApiRateLimitServiceImpl` keeps it: a counter per account that lives
//! `api.throttling.interval` seconds from the account's first call after the last
//! counter expired (an Ehcache entry with that time to live); every call increments it
//! — also one that is refused, also `queryAsyncJobResult` — and a call that takes it
//! past `api.throttling.max` is refused before its command is looked at, with HTTP
//! 429, errorcode 429, cserrorcode 9999 and "The given user has reached his/her
//! account api limit, please retry after [N] ms.", N the counter's remaining life.
//! (Root admins are exempt in CloudStack; cloudsim has one account, which is not.)
//!
//! The interval is CloudStack time: cloudsim's `--time-scale` shortens it like every
//! latency, and N is the real remaining time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::error::CsError;
use crate::world::ApiThrottling;

/// The accounts' counters.
#[derive(Debug)]
pub(crate) struct Throttle {
    max: u32,
    interval: Duration,
    counters: HashMap<String, (Instant, u32)>,
}

impl Throttle {
    /// The limit of `settings`, its interval scaled by `time_scale`.
    pub(crate) fn new(settings: &ApiThrottling, time_scale: f64) -> Throttle {
        Throttle {
            max: settings.max,
            interval: Duration::from_secs_f64(settings.interval_s as f64 * time_scale)
                .max(Duration::from_millis(1)),
            counters: HashMap::new(),
        }
    }

    /// Counts a call of `account` at `now`; over the limit, the refusal.
    pub(crate) fn count(&mut self, account: &str, now: Instant) -> Result<(), CsError> {
        let interval = self.interval;
        let (since, count) = self
            .counters
            .entry(account.to_string())
            .and_modify(|(since, count)| {
                if now.duration_since(*since) >= interval {
                    *since = now;
                    *count = 0;
                }
            })
            .or_insert((now, 0));
        *count += 1;
        if *count <= self.max {
            return Ok(());
        }
        let remaining = interval.saturating_sub(now.duration_since(*since));
        Err(CsError {
            code: 429,
            cs_code: 9999,
            text: format!(
                "The given user has reached his/her account api limit, please retry after [{}] ms.",
                remaining.as_millis()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_window_from_the_first_call_counts_refused_calls_too() {
        let mut t = Throttle::new(
            &ApiThrottling {
                max: 2,
                interval_s: 1,
            },
            1.0,
        );
        let start = Instant::now();
        assert!(t.count("a", start).is_ok());
        assert!(t.count("a", start + Duration::from_millis(100)).is_ok());
        let refused = t
            .count("a", start + Duration::from_millis(400))
            .unwrap_err();
        assert_eq!((refused.code, refused.cs_code), (429, 9999));
        assert!(
            refused.text.ends_with("please retry after [600] ms."),
            "{}",
            refused.text
        );
        // Another account has its own counter.
        assert!(t.count("b", start + Duration::from_millis(400)).is_ok());
        // The window ends a second after its first call, not after the last one.
        assert!(t.count("a", start + Duration::from_millis(1000)).is_ok());
    }
}
