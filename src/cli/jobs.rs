//! `hili jobs`: one row per job under a header — id, state, repair, when it was queued and last
//! changed (local time), source, and its output or reason — or, with `--json`, one object per
//! job with its times in RFC 3339 UTC. Also the plain tables and time formats the other
//! reports share.

use comfy_table::{Table, presets};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::{Value, json};

use super::Exit;
use super::args::JobsArgs;
use crate::config::Config;
use crate::store::{Job, State, Store};

pub(super) async fn jobs(config: &Config, args: JobsArgs) -> anyhow::Result<Exit> {
    let store = Store::open_existing_at(&config.queue_location()?).await?;
    let jobs = store.all_jobs(args.state).await?;
    let notes = store.input_notes().await?;
    store.close().await;
    let note = |j: &Job| notes.get(&j.id).map(String::as_str);
    if args.json {
        let all: Vec<Value> = jobs
            .iter()
            .map(|j| {
                let mut v = job_json(j);
                v["input"] = json!(note(j));
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(Exit::Ok);
    }
    if jobs.is_empty() {
        match args.state {
            Some(s) => println!("no {s} jobs"),
            None => println!("no jobs: queue photos with `hili add`"),
        }
        return Ok(Exit::Ok);
    }
    let tz = TimeZone::system();
    let mut table = plain_table(&[
        "id",
        "state",
        "repair",
        "queued",
        "changed",
        "source",
        "output or reason",
    ]);
    for j in &jobs {
        let mut detail = match (&j.output_path, &j.reason) {
            (Some(out), _) if j.state() == State::Done => out.display().to_string(),
            // The source has its own column: the reason need not name it again.
            (_, Some(r)) => without_path(r, j),
            _ => String::new(),
        };
        if let Some(n) = note(j) {
            detail.push_str(&format!("  [{n}]"));
        }
        table.add_row(vec![
            j.id.0.to_string(),
            j.state().as_str().to_string(),
            j.repair.name().to_string(),
            local(j.created_at_ms, &tz),
            local(j.updated_at_ms, &tz),
            j.source_path.display().to_string(),
            detail,
        ]);
    }
    print_table(&table);
    Ok(Exit::Ok)
}

/// A job as `--json` gives it (`hili jobs`, and the oldest queued job of `hili status`).
pub(super) fn job_json(j: &Job) -> Value {
    json!({
        "id": j.id.0,
        "state": j.state().as_str(),
        "repair": j.repair.name(),
        "rgb": j.rgb.map(|c| c.to_string()),
        "source": j.source_path.to_string_lossy(),
        "output": j.output_path.as_ref().map(|p| p.to_string_lossy()),
        "output_sha256": j.output_sha256,
        "content_sha256": j.content_sha256,
        "mdf": j.mdf(),
        "reason": j.reason,
        "attempts": j.attempts,
        "credit_spent": j.credit_spent,
        "created_at": utc(j.created_at_ms),
        "updated_at": utc(j.updated_at_ms),
    })
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds, e.g. `2026-11-30T08:15:02.125Z`.
pub(super) fn utc(ms: i64) -> String {
    match Timestamp::from_millisecond(ms) {
        Ok(t) => format!("{t:.3}"),
        Err(_) => format!("{ms} ms after 1970"),
    }
}

/// Unix milliseconds as a local date and time a person reads at a glance: `2026-11-30 09:15:02`.
pub(super) fn local(ms: i64, tz: &TimeZone) -> String {
    match Timestamp::from_millisecond(ms) {
        Ok(t) => t
            .to_zoned_datetime(tz.clone())
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string(),
        Err(_) => utc(ms),
    }
}

/// A job's reason without its file's name: `/scans/a.jpg: not a JPEG or PNG` → `not a JPEG or
/// PNG`. Reasons that say nothing more than the name are kept whole.
pub(super) fn without_path(reason: &str, j: &Job) -> String {
    let path = j.source_path.display().to_string();
    let stripped = reason.replace(&path, "");
    let stripped = stripped.trim_start_matches([':', ' ']).trim();
    match stripped.is_empty() {
        true => reason.to_string(),
        false => stripped.to_string(),
    }
}

/// A table without borders, its columns two spaces apart, under a header row when given one.
pub(super) fn plain_table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    if !header.is_empty() {
        t.set_header(header.to_vec());
    }
    t
}

/// Prints a [`plain_table`], lines flush left and without trailing blanks. A reader that
/// stops early (`hili jobs | head`) ends the listing quietly.
pub(super) fn print_table(t: &Table) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for line in table_lines(t) {
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
}

pub(super) fn table_lines(t: &Table) -> Vec<String> {
    let mut t = t.clone();
    for c in t.column_iter_mut() {
        c.set_padding((0, 2));
    }
    t.lines().map(|l| l.trim_end().to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_utc_in_json_and_as_a_plain_local_time_in_text() {
        let ms = 1_796_026_502_125; // 2026-11-30T08:15:02.125Z
        assert_eq!(utc(ms), "2026-11-30T08:15:02.125Z");
        let tz = TimeZone::fixed(jiff::tz::offset(1));
        assert_eq!(local(ms, &tz), "2026-11-30 09:15:02");
    }

    #[test]
    fn a_plain_table_lines_up_under_its_header_without_borders() {
        let mut t = plain_table(&["id", "state"]);
        t.add_row(vec!["12", "failed"]);
        t.add_row(vec!["7", "done"]);
        assert_eq!(
            table_lines(&t),
            ["id  state", "12  failed", "7   done"],
            "{t}"
        );
    }
}
