//! Counts failed attempts per key (sign-ins per email) in a sliding window, so guessing
//! passwords is slow. Per process: enough to stop a single client hammering one account.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{AppError, AppResult};

pub struct AttemptLimiter {
    max_failures: usize,
    window: Duration,
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

impl AttemptLimiter {
    pub fn new(max_failures: usize, window: Duration) -> Self {
        Self {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Sign-ins: 10 failures per email in 15 minutes.
    pub fn for_sign_in() -> Self {
        Self::new(10, Duration::from_secs(15 * 60))
    }

    /// RATE_LIMITED while `key` has used up its failures in the window.
    pub fn check(&self, key: &str) -> AppResult<()> {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let recent = failures.entry(key.to_owned()).or_default();
        recent.retain(|at| now.duration_since(*at) < self.window);
        if recent.len() >= self.max_failures {
            return Err(AppError::RateLimited);
        }
        if recent.is_empty() {
            failures.remove(key);
        }
        Ok(())
    }

    pub fn record_failure(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures
            .entry(key.to_owned())
            .or_default()
            .push(Instant::now());
    }

    pub fn reset(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_beyond_the_limit_are_refused_until_the_window_passes() {
        let limiter = AttemptLimiter::new(2, Duration::from_millis(50));
        for _ in 0..2 {
            limiter.check("a").unwrap();
            limiter.record_failure("a");
        }
        assert!(matches!(limiter.check("a"), Err(AppError::RateLimited)));
        limiter.check("b").unwrap();
        std::thread::sleep(Duration::from_millis(60));
        limiter.check("a").unwrap();
        limiter.record_failure("a");
        limiter.reset("a");
        limiter.check("a").unwrap();
    }
}
