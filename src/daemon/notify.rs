//! Talking to systemd (`Type=notify`): `READY=1` once recovery and the first scan are done,
//! `STATUS=` with the queue counts and credits, `WATCHDOG=1` at half the watchdog interval, and
//! `STOPPING=1` on shutdown. Outside systemd (`NOTIFY_SOCKET` unset) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

#[derive(Debug, Clone, Copy)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
        }
    }

    fn send(&self, state: &[NotifyState]) {
        if self.enabled
            && let Err(e) = sd_notify::notify(false, state)
        {
            tracing::debug!("could not notify systemd: {e}");
        }
    }

    pub fn ready(&self) {
        self.send(&[NotifyState::Ready]);
    }

    pub fn status(&self, text: &str) {
        self.send(&[NotifyState::Status(text)]);
    }

    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }

    /// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, or `None` without a watchdog.
    /// As sd_watchdog_enabled(3) says, `WATCHDOG_PID`, when set, must be this process.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        if !self.enabled {
            return None;
        }
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        if let Ok(pid) = std::env::var("WATCHDOG_PID")
            && pid.parse::<u32>().ok() != Some(std::process::id())
        {
            return None;
        }
        (usec > 0).then(|| Duration::from_micros(usec / 2))
    }
}
