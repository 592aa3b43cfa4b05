//! Exponential backoff with jitter for transient failures, and the gentle polling schedule for
//! photos the service is still processing.

use std::time::Duration;

use rand::Rng;

/// Delay before attempt `attempt + 1` after `attempt` failures: `base · 2^(attempt-1)`, capped,
/// with ±25 % jitter so many jobs that failed together do not retry together.
pub fn retry_delay(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let d = exp.min(cap);
    let jitter = rand::thread_rng().gen_range(0.75..=1.25);
    d.mul_f64(jitter).min(cap)
}

/// How long to wait before asking again about a photo that has been processing for `elapsed`:
/// the configured interval for the first minute, then growing slowly to six times it, so long
/// jobs cost few calls and short ones are seen promptly.
pub fn poll_delay(interval: Duration, elapsed: Duration) -> Duration {
    let factor = 1.0 + (elapsed.as_secs_f64() / 60.0 - 1.0).max(0.0);
    interval.mul_f64(factor.min(6.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_and_is_capped() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(60);
        for _ in 0..50 {
            let d1 = retry_delay(1, base, cap);
            assert!(d1 >= Duration::from_millis(750) && d1 <= Duration::from_millis(1250));
            let d4 = retry_delay(4, base, cap);
            assert!(d4 >= Duration::from_secs(6) && d4 <= Duration::from_secs(10));
            assert!(retry_delay(30, base, cap) <= cap);
        }
    }

    #[test]
    fn polling_backs_off_gently() {
        let i = Duration::from_secs(5);
        assert_eq!(poll_delay(i, Duration::from_secs(10)), i);
        assert_eq!(poll_delay(i, Duration::from_secs(120)), i * 2);
        assert_eq!(poll_delay(i, Duration::from_secs(3600)), i * 6);
    }
}
