//! Local days, for the daily budget (`[queue] budget_per_day`): the local midnight that began
//! the current day and the one that ends it, from the C library's time zone rules (`TZ`,
//! `/etc/localtime`), so a day of 23 or 25 hours (a daylight-saving change) is still one day.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The local midnight at or before `unix_secs`, and the next one after it (unix seconds).
/// `None` only if the C library cannot convert the time (a year out of its range).
pub(crate) fn local_day(unix_secs: i64) -> Option<(i64, i64)> {
    let t = libc::time_t::try_from(unix_secs).ok()?;
    // SAFETY: `tm` is plain data that localtime_r fills; both calls only read and write the
    // values passed, and are thread-safe (the _r variant, and mktime reads the zone it set).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return None;
    }
    let midnight = |mut day: libc::tm, add_days: i32| -> Option<i64> {
        day.tm_hour = 0;
        day.tm_min = 0;
        day.tm_sec = 0;
        day.tm_mday += add_days;
        // Whether daylight saving is in force at that midnight is for mktime to find out.
        day.tm_isdst = -1;
        // SAFETY: as above; mktime normalises the fields it is given.
        let at = unsafe { libc::mktime(&mut day) };
        // time_t is i64 here, narrower on some targets.
        #[allow(clippy::useless_conversion)]
        (at != -1).then_some(i64::from(at))
    };
    Some((midnight(tm, 0)?, midnight(tm, 1)?))
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Unix milliseconds of the local midnight that began today (falls back to 24 hours ago).
pub(crate) fn today_began_ms() -> i64 {
    let now = now_secs();
    local_day(now).map_or(now - 86_400, |d| d.0) * 1000
}

/// How long until the next local midnight (at least a second; 24 hours if it cannot be known).
pub(crate) fn until_next_midnight() -> Duration {
    let now = now_secs();
    let next = local_day(now).map_or(now + 86_400, |d| d.1);
    Duration::from_secs(u64::try_from(next - now).unwrap_or(0).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local_hms(unix_secs: i64) -> (i32, i32, i32) {
        let t = unix_secs as libc::time_t;
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        assert!(!unsafe { libc::localtime_r(&t, &mut tm) }.is_null());
        (tm.tm_hour, tm.tm_min, tm.tm_sec)
    }

    #[test]
    fn the_next_local_midnight_is_the_end_of_todays_local_date() {
        // Noon, a second before midnight, midnight itself, and spread over a year of days
        // (daylight-saving changes included wherever the zone has them).
        let base = 1_764_504_000; // 2025-11-30 12:00 UTC
        for step in 0..400 {
            let now = base + step * 86_400 + step * 3_607;
            let (start, next) = local_day(now).expect("a representable time");
            assert!(start <= now && now < next, "{start} <= {now} < {next}");
            assert_eq!(local_hms(start), (0, 0, 0), "today began at a midnight");
            assert_eq!(
                local_hms(next),
                (0, 0, 0),
                "the next day begins at a midnight"
            );
            // A day is 24 hours, or 23 or 25 across a daylight-saving change.
            assert!(
                [23, 24, 25].contains(&((next - start) / 3600)),
                "{}",
                next - start
            );
            // The last second of the day still belongs to it; its midnight starts the next.
            assert_eq!(local_day(next - 1), Some((start, next)));
            assert_eq!(local_day(next).map(|d| d.0), Some(next));
        }
    }

    /// The test above in a zone with daylight saving (Central European rules, written as a
    /// POSIX TZ string so no zone database is needed), in a child process: the zone is the
    /// process's, and changing it here would change it under the other tests.
    #[test]
    fn days_of_23_and_25_hours_in_a_zone_with_daylight_saving() {
        let exe = std::env::current_exe().expect("the test binary");
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "pipeline::day::tests::days_in_the_zone_of_tz",
                "--ignored",
            ])
            .env("TZ", "CET-1CEST,M3.5.0,M10.5.0/3")
            .output()
            .expect("run the test binary");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "{text}");
    }

    #[test]
    #[ignore = "run by days_of_23_and_25_hours_in_a_zone_with_daylight_saving, with TZ set"]
    fn days_in_the_zone_of_tz() {
        the_next_local_midnight_is_the_end_of_todays_local_date();
        // 2026-03-29 and 2026-10-25 change the clocks in this zone.
        let lengths: Vec<i64> = [1_774_785_600, 1_777_777_777, 1_792_900_800]
            .iter()
            .map(|&t| local_day(t).map(|(a, b)| (b - a) / 3600).unwrap_or(0))
            .collect();
        assert_eq!(lengths, [23, 24, 25]);
        // A minute before the midnight that ends the spring change's day: that 23-hour day.
        let (start, next) = local_day(1_774_821_540).unwrap_or_default();
        assert_eq!((start, next), (1_774_738_800, 1_774_821_600));
    }

    #[test]
    fn a_wait_until_midnight_is_at_most_a_day() {
        let wait = until_next_midnight();
        assert!(wait >= Duration::from_secs(1) && wait <= Duration::from_secs(25 * 3600));
        assert!(today_began_ms() <= now_secs() * 1000);
    }
}
