//! The one backoff helper: capped exponential delays with optional jitter.
//!
//! Used by every reconnect loop in the broker layer. The cap is applied with
//! `min` (a classic mistake is to use `max` and never cap).

use std::time::Duration;

/// Capped exponential backoff: `initial * factor^n`, never above `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    factor: u32,
    jitter: bool,
    attempt: u32,
}

impl Default for Backoff {
    /// 100 ms doubling up to 10 s, with jitter.
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(10))
    }
}

impl Backoff {
    /// Doubling from `initial` up to `max`, with jitter.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            factor: 2,
            jitter: true,
            attempt: 0,
        }
    }

    /// Turn jitter off (for deterministic tests and callers that want it).
    pub fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// The delay before the next attempt; advances the attempt counter.
    /// With jitter the delay is uniformly drawn from `[d/2, d]`.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.factor.saturating_pow(self.attempt.min(32));
        let d = self.initial.saturating_mul(exp).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        if self.jitter {
            let half = d / 2;
            half + half.mul_f64(fastrand::f64())
        } else {
            d
        }
    }

    /// Attempts made since the last [`reset`](Self::reset).
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Start over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps() {
        let mut b =
            Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).without_jitter();
        let got: Vec<u128> = (0..7).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000, 1000]);
        for _ in 0..100 {
            assert_eq!(b.next_delay(), Duration::from_secs(1));
        }
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn jitter_stays_within_half_and_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        for i in 0..50 {
            let d = b.next_delay();
            let nominal = Duration::from_millis(100 * 2u64.pow(i.min(2)));
            assert!(d >= nominal / 2 && d <= nominal, "{d:?} vs {nominal:?}");
        }
    }

    #[test]
    fn max_below_initial_is_raised() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1)).without_jitter();
        assert_eq!(b.next_delay(), Duration::from_secs(2));
        assert_eq!(b.next_delay(), Duration::from_secs(2));
    }
}
