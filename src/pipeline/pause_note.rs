//! What a pause of uploads means for a person reading `hili status`, the log or the service
//! status line: its message and, while results cannot be stored, how many paid results wait
//! and how long at least until the first of them expires — written to the store by the
//! running `hili run`, so `hili status` in another process can say it.

use std::time::Duration;

use super::control::Pause;
use super::{Ctx, now_ms};

/// While uploads stay paused, the note for `hili status` is refreshed this often (the number
/// of results waiting changes as downloads go on).
pub(super) const REPUBLISH: Duration = Duration::from_secs(10);

/// What a pause means for a person reading `hili status`, the log or the service status line:
/// its message and, while results cannot be stored, how many paid results wait and how long
/// at least until the first of them expires.
pub async fn describe_pause(ctx: &Ctx, pause: &Pause) -> String {
    let mut text = pause.message();
    if matches!(pause, Pause::NoRoom(_))
        && let Ok((n, Some(first))) = ctx.store.paid_waiting().await
        && n > 0
    {
        // The service deletes a result an hour after processing, which ends after the upload.
        let mins = (first + 3_600_000 - now_ms()).max(0) / 60_000;
        text.push_str(&format!(
            "; {n} paid result(s) wait to be downloaded, the first expires in {mins} min at the \
             earliest"
        ));
    }
    text
}

/// Writes why uploads are paused (or that they are not) for `hili status`. Best effort.
pub(super) async fn publish_pause(ctx: &Ctx, pause: Option<&Pause>) {
    let text = match pause {
        Some(p) => Some(describe_pause(ctx, p).await),
        None => None,
    };
    if let Some(t) = &text
        && matches!(pause, Some(Pause::NoRoom(_)))
    {
        tracing::warn!("{t}");
    }
    if let Err(e) = ctx.store.set_pause_note(text.as_deref()).await {
        tracing::warn!("could not record why uploads are paused: {e}");
    }
}
