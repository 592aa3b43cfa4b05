//! The stability rule, pure (no I/O, time passed in): a file is ready only when two `stat`s
//! at least `stable_for` apart saw the same size and mtime, and nothing changed in between
//! that we were told about. Files still being written are re-checked until they settle; they
//! are never given up on. One ordered queue of due checks serves every pending file, so the
//! caller needs a single timer (`next_due`), not one per file.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

/// What `stat` says about a file's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub size: u64,
    pub mtime_ns: i64,
}

/// The outcome of a due check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Unchanged for `stable_for`: queue this version.
    Stable(Stat),
    /// Changed (or changed recently): checked again later.
    Waiting,
    /// The file is gone; forgotten.
    Gone,
    /// Not tracked (already decided or forgotten).
    Unknown,
}

#[derive(Debug)]
struct Entry {
    stat: Stat,
    /// When `stat` was first seen (the last change we know of).
    since: Instant,
    /// The one check scheduled for this file.
    due: Instant,
}

/// Files waiting to settle.
#[derive(Debug)]
pub struct Tracker {
    stable_for: Duration,
    entries: HashMap<PathBuf, Entry>,
    /// Due checks, earliest first. Exactly one live item per entry (its `due`); items whose
    /// entry was forgotten or rescheduled are skipped when popped.
    queue: BinaryHeap<Reverse<(Instant, PathBuf)>>,
}

impl Tracker {
    pub fn new(stable_for: Duration) -> Tracker {
        Tracker {
            stable_for,
            entries: HashMap::new(),
            queue: BinaryHeap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, path: &Path) -> bool {
        self.entries.contains_key(path)
    }

    /// A fresh `stat` of `path` (from an event or a scan). A new file is checked again
    /// `stable_for` from now; a known one whose version changed restarts its wait (its
    /// scheduled check stays and then reschedules, so a burst of writes costs no heap churn).
    pub fn observe(&mut self, path: PathBuf, stat: Stat, now: Instant) {
        match self.entries.get_mut(&path) {
            Some(e) => {
                if e.stat != stat {
                    e.stat = stat;
                    e.since = now;
                }
            }
            None => {
                let due = now + self.stable_for;
                self.queue.push(Reverse((due, path.clone())));
                self.entries.insert(
                    path,
                    Entry {
                        stat,
                        since: now,
                        due,
                    },
                );
            }
        }
    }

    /// Stops tracking `path` (deleted, moved away, or now ignored).
    pub fn forget(&mut self, path: &Path) {
        self.entries.remove(path);
    }

    /// Forgets every file under `dir`.
    pub fn forget_under(&mut self, dir: &Path) {
        self.entries.retain(|p, _| !p.starts_with(dir));
    }

    /// The earliest scheduled check, if any (the caller's one timer).
    pub fn next_due(&mut self) -> Option<Instant> {
        while let Some(Reverse((due, path))) = self.queue.peek() {
            match self.entries.get(path) {
                Some(e) if e.due == *due => return Some(*due),
                _ => {
                    self.queue.pop();
                }
            }
        }
        None
    }

    /// Removes and returns the files whose check is due at `now`; the caller stats each and
    /// passes the result to [`Tracker::confirm`].
    pub fn take_due(&mut self, now: Instant) -> Vec<PathBuf> {
        let mut out = Vec::new();
        while let Some(due) = self.next_due() {
            if due > now {
                break;
            }
            if let Some(Reverse((_, path))) = self.queue.pop() {
                out.push(path);
            }
        }
        out
    }

    /// Decides a due file from a fresh `stat` (`None`: it no longer exists as a file).
    pub fn confirm(&mut self, path: &Path, stat: Option<Stat>, now: Instant) -> Verdict {
        let Some(e) = self.entries.get_mut(path) else {
            return Verdict::Unknown;
        };
        let Some(stat) = stat else {
            self.entries.remove(path);
            return Verdict::Gone;
        };
        if stat != e.stat {
            e.stat = stat;
            e.since = now;
        }
        let ready_at = e.since + self.stable_for;
        if ready_at <= now {
            self.entries.remove(path);
            return Verdict::Stable(stat);
        }
        e.due = ready_at;
        self.queue.push(Reverse((ready_at, path.to_path_buf())));
        Verdict::Waiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(size: u64, mtime_ns: i64) -> Stat {
        Stat { size, mtime_ns }
    }

    #[test]
    fn unchanged_file_is_stable_after_the_wait() {
        let t0 = Instant::now();
        let s = Duration::from_secs(5);
        let mut t = Tracker::new(s);
        let p = PathBuf::from("/w/a.jpg");
        t.observe(p.clone(), st(10, 1), t0);
        assert_eq!(t.next_due(), Some(t0 + s));
        assert!(t.take_due(t0 + s - Duration::from_millis(1)).is_empty());
        assert_eq!(t.take_due(t0 + s), vec![p.clone()]);
        assert_eq!(
            t.confirm(&p, Some(st(10, 1)), t0 + s),
            Verdict::Stable(st(10, 1))
        );
        assert!(t.is_empty());
        assert_eq!(t.next_due(), None);
        assert_eq!(t.confirm(&p, Some(st(10, 1)), t0 + s), Verdict::Unknown);
    }

    #[test]
    fn growing_file_waits_until_it_settles_and_keeps_one_check() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let ms = Duration::from_millis;
        let mut t = Tracker::new(s);
        let p = PathBuf::from("/w/big.jpg");
        // Writes every 300 ms for 3 s, each reported by an event.
        for i in 0..10u64 {
            t.observe(p.clone(), st(100 * (i + 1), i as i64), t0 + ms(300 * i));
        }
        // The first check (t0+1s) finds the same last-seen version but a recent change.
        assert_eq!(t.queue.len(), 1);
        assert_eq!(t.take_due(t0 + s), vec![p.clone()]);
        let last = st(1000, 9);
        assert_eq!(t.confirm(&p, Some(st(400, 3)), t0 + s), Verdict::Waiting);
        // Without events (polling), the writer's progress is only seen at checks.
        let mut now = t0 + s;
        loop {
            let due = t.next_due().unwrap();
            assert!(due > now);
            now = due;
            assert_eq!(t.take_due(now), vec![p.clone()]);
            let seen = if now >= t0 + ms(2700) {
                last
            } else {
                st(now.duration_since(t0).as_millis() as u64, 0)
            };
            match t.confirm(&p, Some(seen), now) {
                Verdict::Stable(v) => {
                    assert_eq!(v, last);
                    break;
                }
                Verdict::Waiting => assert!(now < t0 + ms(6000), "never settled"),
                other => panic!("{other:?}"),
            }
        }
        assert!(now >= t0 + ms(2700) + s);
    }

    #[test]
    fn event_after_scheduling_postpones_to_last_change_plus_wait() {
        let t0 = Instant::now();
        let s = Duration::from_secs(2);
        let mut t = Tracker::new(s);
        let p = PathBuf::from("/w/a.jpg");
        t.observe(p.clone(), st(1, 1), t0);
        t.observe(p.clone(), st(2, 2), t0 + Duration::from_secs(1));
        t.take_due(t0 + s);
        assert_eq!(t.confirm(&p, Some(st(2, 2)), t0 + s), Verdict::Waiting);
        assert_eq!(t.next_due(), Some(t0 + Duration::from_secs(3)));
        // The same version again does not restart the wait.
        t.observe(p.clone(), st(2, 2), t0 + Duration::from_millis(2500));
        let at = t0 + Duration::from_secs(3);
        assert_eq!(t.take_due(at), vec![p.clone()]);
        assert_eq!(t.confirm(&p, Some(st(2, 2)), at), Verdict::Stable(st(2, 2)));
    }

    #[test]
    fn gone_and_forgotten_files() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut t = Tracker::new(s);
        for n in ["/w/a", "/w/d/b", "/w/d/c", "/w/e"] {
            t.observe(PathBuf::from(n), st(1, 1), t0);
        }
        t.forget(Path::new("/w/a"));
        t.forget_under(Path::new("/w/d"));
        assert_eq!(t.len(), 1);
        assert_eq!(t.take_due(t0 + s), vec![PathBuf::from("/w/e")]);
        assert_eq!(t.confirm(Path::new("/w/e"), None, t0 + s), Verdict::Gone);
        assert!(t.is_empty() && t.next_due().is_none());
    }

    #[test]
    fn many_files_are_served_in_due_order() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut t = Tracker::new(s);
        for i in (0..100u64).rev() {
            t.observe(
                PathBuf::from(format!("/w/{i:03}")),
                st(i, 0),
                t0 + Duration::from_millis(i * 10),
            );
        }
        let due = t.take_due(t0 + s + Duration::from_millis(495));
        assert_eq!(due.len(), 50);
        assert_eq!(due[0], PathBuf::from("/w/000"));
        assert_eq!(t.next_due(), Some(t0 + s + Duration::from_millis(500)));
    }
}
