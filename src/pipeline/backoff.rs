//! Exponential backoff with jitter for transient failures (when to poll a processing photo is
//! `poll_clock`'s).

use std::time::Duration;

use crate::store::JobId;

/// Delay before attempt `attempt + 1` after `attempt` failures: `base · 2^(attempt-1)`, capped,
/// with ±25 % jitter so many jobs that failed together do not retry together.
///
/// The jitter is drawn from the job id and the attempt number rather than a random source:
/// jobs still spread apart, and a run (or a test) that meets the same failures waits the same.
pub fn retry_delay(attempt: u32, base: Duration, cap: Duration, job: JobId) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let d = exp.min(cap);
    let draw = splitmix64((job.0 as u64) ^ (u64::from(attempt) << 48));
    // The top 53 bits as a fraction in [0, 1).
    let unit = (draw >> 11) as f64 / (1u64 << 53) as f64;
    d.mul_f64(0.75 + 0.5 * unit).min(cap)
}

/// SplitMix64's output function: neighbouring inputs (job 7, job 8) give unrelated outputs.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_and_is_capped() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(60);
        for id in 1..=50 {
            let job = JobId(id);
            let d1 = retry_delay(1, base, cap, job);
            assert!(d1 >= Duration::from_millis(750) && d1 <= Duration::from_millis(1250));
            let d4 = retry_delay(4, base, cap, job);
            assert!(d4 >= Duration::from_secs(6) && d4 <= Duration::from_secs(10));
            assert!(retry_delay(30, base, cap, job) <= cap);
        }
    }

    #[test]
    fn jitter_is_repeatable_per_job_and_spreads_jobs_apart() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(60);
        let job = JobId(42);
        assert_eq!(
            retry_delay(3, base, cap, job),
            retry_delay(3, base, cap, job)
        );
        // Jobs that failed together retry apart: 200 neighbouring ids cover the ±25 % band.
        let ms: Vec<u128> = (1..=200)
            .map(|id| retry_delay(1, base, cap, JobId(id)).as_millis())
            .collect();
        let (lo, hi) = (ms.iter().min().unwrap(), ms.iter().max().unwrap());
        assert!(*lo < 800 && *hi > 1200, "jitter band {lo}..{hi} ms");
        let mut distinct = ms.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(
            distinct.len() > 150,
            "only {} distinct delays",
            distinct.len()
        );
        // The same job's next attempt draws anew rather than repeating its fraction.
        // (Each attempt's delay over its un-jittered value, in thousandths.)
        let per_mille: Vec<u128> = (1..=4)
            .map(|a| retry_delay(a, base, cap, job).as_millis() * 1000 / (1000u128 << (a - 1)))
            .collect();
        assert!(per_mille.windows(2).any(|w| w[0] != w[1]), "{per_mille:?}");
    }
}
