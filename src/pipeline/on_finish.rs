//! `[notify] on_finish`: the command told how a run went — after `hili run --once`, and each
//! time a daemon's batch of work drains — with the figures in its environment (`HILI_DONE`,
//! `HILI_CREDITS_SPENT`…) and as one JSON object on its standard input, enough to send a mail
//! or a chat message. The command never stops hili: one that cannot start, fails or outlives
//! `[notify] timeout` (then killed, with whatever it started) is logged and forgotten.
//!
//! A daemon's batch is read from the store, not from the scheduler: it ends when nothing is
//! queued or in flight and some job reached a final state since the last notice, so an idle
//! daemon stays quiet and a batch is told once, however many idle looks follow. An idle look
//! costs one count per state; the audit trail is read only when those counts moved.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::{Ctx, Summary, now_ms};
use crate::config::NotifyConfig;
use crate::store::State;

/// How often the daemon's queue is looked at for the end of a batch.
const LOOK_EVERY: Duration = Duration::from_millis(500);
/// The most of the command's output kept for the log.
const OUTPUT_KEPT: usize = 2048;
/// Variables of hili's environment the command must not inherit: secrets.
const NOT_PASSED: [&str; 2] = ["HILI_SECRET_KEY", "HILI_SIM_SECRET"];

/// What the command is told.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    /// `once` (a `hili run --once` ended) or `idle` (a daemon's batch drained).
    pub trigger: &'static str,
    pub done: u64,
    pub failed: u64,
    pub held: u64,
    pub skipped: u64,
    /// Jobs still queued or in flight (a `--once` run that stopped early).
    pub unfinished: u64,
    pub credits_spent: u64,
    /// Credits left when last seen, if ever.
    pub credits_left: Option<u64>,
    pub duration_s: f64,
    /// Why a `--once` run stopped early (no credits, the service refusing the account…).
    pub blocked: Option<String>,
    /// The run could not work at all: a person must fix the configuration or the account.
    pub cannot_run: bool,
}

impl RunReport {
    fn from_summary(trigger: &'static str, s: &Summary, credits_left: Option<u64>) -> RunReport {
        RunReport {
            trigger,
            done: s.done,
            failed: s.failed,
            held: s.held,
            skipped: s.skipped,
            unfinished: s.unfinished,
            credits_spent: s.credits_spent,
            credits_left,
            duration_s: (s.elapsed.as_secs_f64() * 10.0).round() / 10.0,
            blocked: s.blocked.clone(),
            cannot_run: s.cannot_run,
        }
    }

    /// One line for a chat message.
    fn line(&self) -> String {
        let mut line = format!(
            "hili: {} done, {} failed, {} held; {} credit(s) spent in {:.1}s",
            self.done, self.failed, self.held, self.credits_spent, self.duration_s
        );
        if let Some(why) = &self.blocked {
            line.push_str("; stopped early: ");
            line.push_str(why);
        }
        line
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let opt = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
        vec![
            ("HILI_TRIGGER", self.trigger.to_string()),
            ("HILI_DONE", self.done.to_string()),
            ("HILI_FAILED", self.failed.to_string()),
            ("HILI_HELD", self.held.to_string()),
            ("HILI_SKIPPED", self.skipped.to_string()),
            ("HILI_UNFINISHED", self.unfinished.to_string()),
            ("HILI_CREDITS_SPENT", self.credits_spent.to_string()),
            ("HILI_CREDITS_LEFT", opt(self.credits_left)),
            ("HILI_DURATION_S", format!("{:.1}", self.duration_s)),
            ("HILI_BLOCKED", self.blocked.clone().unwrap_or_default()),
            ("HILI_CANNOT_RUN", u8::from(self.cannot_run).to_string()),
            ("HILI_SUMMARY", self.line()),
        ]
    }
}

/// After a `--once` run: tells the command, and waits for it (within its timeout).
pub(crate) async fn after_once(ctx: &Ctx, summary: &Summary) {
    if ctx.settings.notify.on_finish.is_empty() {
        return;
    }
    let report = RunReport::from_summary("once", summary, credits_left(ctx).await);
    tell(&ctx.settings.notify, &report).await;
}

async fn credits_left(ctx: &Ctx) -> Option<u64> {
    ctx.store
        .latest_credits()
        .await
        .ok()
        .flatten()
        .map(|(_, n)| n)
}

/// The daemon's side: looks at the queue every [`LOOK_EVERY`] until `stop`, and tells the
/// command each time a batch drains. Returns once the last command told has ended.
pub(crate) async fn watch_batches(ctx: Arc<Ctx>, stop: CancellationToken) {
    let mut batch = Batch::starting(&ctx, now_ms());
    let mut telling: Option<tokio::task::JoinHandle<()>> = None;
    let mut tick = tokio::time::interval(LOOK_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let Some(report) = batch.look(&ctx).await else {
            continue;
        };
        // One command at a time: a slow one delays the next notice, never the work.
        if let Some(previous) = telling.take() {
            let _ = previous.await;
        }
        let notify = ctx.settings.notify.clone();
        telling = Some(tokio::spawn(async move { tell(&notify, &report).await }));
    }
    if let Some(last) = telling {
        let _ = last.await;
    }
}

/// The batch a daemon is in: since when outcomes count, the jobs per state and the credits
/// spent before it, and when it was first seen busy.
struct Batch {
    since_ms: i64,
    counts_before: Option<BTreeMap<State, u64>>,
    spent_before: u64,
    busy_since: Option<Instant>,
    last_look: Instant,
}

impl Batch {
    fn starting(ctx: &Ctx, since_ms: i64) -> Batch {
        Batch {
            since_ms,
            counts_before: None,
            spent_before: ctx.control.spent(),
            busy_since: None,
            last_look: Instant::now(),
        }
    }

    /// One look at the queue: the batch's report when it has just drained.
    async fn look(&mut self, ctx: &Ctx) -> Option<RunReport> {
        let look_ms = now_ms();
        let previous_look = std::mem::replace(&mut self.last_look, Instant::now());
        let counts = ctx.store.counts().await.ok()?;
        let busy = [
            State::Queued,
            State::Uploading,
            State::Processing,
            State::Downloading,
        ]
        .iter()
        .any(|s| counts.get(s).copied().unwrap_or(0) > 0);
        if busy {
            self.busy_since.get_or_insert(previous_look);
            return None;
        }
        // Never seen busy and the same counts as at the last idle look: nothing happened (the
        // usual idle look; a retried job that failed again was seen busy).
        if self.busy_since.is_none() && self.counts_before.as_ref() == Some(&counts) {
            return None;
        }
        let outcomes = ctx.store.outcomes_since(self.since_ms).await.ok()?;
        if outcomes.values().all(|&n| n == 0) {
            self.counts_before = Some(counts);
            return None;
        }
        let outcome = |s| outcomes.get(&s).copied().unwrap_or(0);
        // A batch that came and went between two looks was never seen busy.
        let began = self.busy_since.unwrap_or(previous_look);
        let summary = Summary {
            done: outcome(State::Done),
            failed: outcome(State::Failed),
            held: outcome(State::Held),
            skipped: outcome(State::Skipped),
            credits_spent: ctx.control.spent().saturating_sub(self.spent_before),
            elapsed: began.elapsed(),
            ..Summary::default()
        };
        *self = Batch::starting(ctx, look_ms + 1);
        self.counts_before = Some(counts);
        Some(RunReport::from_summary(
            "idle",
            &summary,
            credits_left(ctx).await,
        ))
    }
}

/// Runs the command with `report`, within the configured timeout. Never fails: what went
/// wrong is logged.
pub(crate) async fn tell(notify: &NotifyConfig, report: &RunReport) {
    let Some((program, args)) = notify.on_finish.split_first() else {
        return;
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(report.env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills whatever it started too.
        .process_group(0)
        .kill_on_drop(true);
    for key in NOT_PASSED {
        cmd.env_remove(key);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(
                "on_finish: could not start {program:?}: {e}; check [notify] on_finish in the configuration"
            );
            return;
        }
    };
    let json = serde_json::to_vec(report).unwrap_or_default();
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let run = async {
        if let Some(mut stdin) = stdin {
            // A command that does not read its input is fine.
            let _ = stdin.write_all(&json).await;
        }
        tokio::join!(child.wait(), kept(stdout), kept(stderr))
    };
    match tokio::time::timeout(notify.timeout, run).await {
        Ok((Ok(status), out, err)) if status.success() => {
            tracing::info!("on_finish: {program:?} ran ({})", report.line());
            tracing::debug!("on_finish output: {out}{err}");
        }
        Ok((Ok(status), _, err)) => tracing::warn!(
            "on_finish: {program:?} failed ({status}): {}; hili goes on",
            err.trim()
        ),
        Ok((Err(e), _, _)) => tracing::warn!("on_finish: waiting for {program:?} failed: {e}"),
        Err(_) => {
            kill_group(child.id());
            let _ = child.kill().await;
            tracing::warn!(
                "on_finish: {program:?} still running after {:?}: killed; hili goes on \
                 (raise [notify] timeout if it needs longer)",
                notify.timeout
            );
        }
    }
}

/// Kills the process group led by `pid` (the command and whatever it started).
fn kill_group(pid: Option<u32>) {
    let Some(pid) = pid.and_then(|p| libc::pid_t::try_from(p).ok()) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers; a negative pid names the group the command leads
    // (it was started with process_group(0), so its group id is its pid).
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

/// Reads a pipe to its end, keeping the first [`OUTPUT_KEPT`] bytes as text.
async fn kept<R: AsyncRead + Unpin>(pipe: Option<R>) -> String {
    let Some(mut pipe) = pipe else {
        return String::new();
    };
    let (mut kept, mut buf) = (Vec::new(), [0u8; 1024]);
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = OUTPUT_KEPT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> RunReport {
        let summary = Summary {
            done: 4,
            failed: 1,
            credits_spent: 4,
            elapsed: Duration::from_millis(2345),
            blocked: Some("no credits left".into()),
            ..Summary::default()
        };
        RunReport::from_summary("once", &summary, None)
    }

    #[test]
    fn the_environment_carries_every_figure() {
        let env: std::collections::HashMap<_, _> = report().env().into_iter().collect();
        assert_eq!(env["HILI_DONE"], "4");
        assert_eq!(env["HILI_FAILED"], "1");
        assert_eq!(env["HILI_CREDITS_SPENT"], "4");
        assert_eq!(env["HILI_CREDITS_LEFT"], "");
        assert_eq!(env["HILI_DURATION_S"], "2.3");
        assert_eq!(env["HILI_BLOCKED"], "no credits left");
        assert!(
            env["HILI_SUMMARY"].contains("4 done, 1 failed, 0 held; 4 credit(s) spent"),
            "{}",
            env["HILI_SUMMARY"]
        );
    }

    #[tokio::test]
    async fn a_command_that_cannot_start_or_fails_is_only_logged() {
        let mut notify = NotifyConfig {
            on_finish: vec!["/nonexistent/hili-notify".into()],
            timeout: Duration::from_secs(5),
        };
        tell(&notify, &report()).await;
        notify.on_finish = vec!["/bin/sh".into(), "-c".into(), "exit 7".into()];
        let started = Instant::now();
        tell(&notify, &report()).await;
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
