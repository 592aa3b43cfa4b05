//! `hili export --format csv|json [--since DATE] [--events]`: the queue as records for an
//! archive. One row per job — source and its SHA-256, conversion (the input note: converted
//! from TIFF, downscaled; empty when sent as it was), repair type, mdf, upload
//! time, credits before and after, result and its SHA-256, final state and reason — or, with
//! `--events`, one row per event with what a PREMIS event needs: type (the state machine's
//! edge), UTC time, object (the photo and its SHA-256), agent (hili's version, the service,
//! the repair type) and outcome (the state reached). Times are RFC 3339 UTC.
//!
//! Rows are written as they are formatted (a buffered stdout), in job id order.

use std::io::{BufWriter, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde_json::{Value, json};

use super::Exit;
use super::args::{ExportArgs, ExportFormat};
use crate::config::Config;
use crate::store::{ExportRow, ProvenanceEvent, Store};

/// The service every upload goes to (the agent that carries out the repair).
const SERVICE: &str = "Hili PhotoEnhance";

/// The columns of a job row, in order (the CSV header; the JSON object's keys).
const JOB_COLUMNS: [&str; 17] = [
    "job_id",
    "source_path",
    "source_sha256",
    "conversion",
    "repair",
    "rgb",
    "mdf",
    "uploaded_at",
    "credits_before",
    "credits_after",
    "result_path",
    "result_sha256",
    "state",
    "reason",
    "charges",
    "queued_at",
    "updated_at",
];

/// The columns of an event row.
const EVENT_COLUMNS: [&str; 12] = [
    "event_id",
    "job_id",
    "type",
    "time",
    "object_path",
    "object_sha256",
    "agent",
    "agent_service",
    "agent_repair",
    "outcome",
    "from_state",
    "detail",
];

pub(super) async fn export(config: &Config, args: ExportArgs) -> anyhow::Result<Exit> {
    // A date hili cannot read is a usage error (exit 2), like any other wrong argument.
    let since = (args.since.as_deref().map(parse_since).transpose())
        .map_err(|e| super::Usage(format!("{e:#}")))?;
    let store = Store::open_existing_at(&config.queue_location()?).await?;
    let (columns, rows): (&[&str], Vec<Vec<Value>>) = if args.events {
        let events = store.export_events(since).await?;
        (&EVENT_COLUMNS, events.iter().map(event_row).collect())
    } else {
        let jobs = store.export_jobs(since).await?;
        let converted = store.input_notes().await?;
        let rows = jobs
            .iter()
            .map(|r| job_row(r, converted.get(&r.job.id)))
            .collect();
        (&JOB_COLUMNS, rows)
    };
    store.close().await;
    let mut out = BufWriter::new(std::io::stdout().lock());
    match args.format {
        ExportFormat::Csv => write_csv(&mut out, columns, &rows),
        ExportFormat::Json => write_json(&mut out, columns, &rows),
    }
    .and_then(|()| out.flush())
    .context("writing the export to standard output")?;
    Ok(Exit::Ok)
}

/// A job's row; `conversion` is its input note (how the input was prepared for the upload:
/// converted, downscaled), if any.
fn job_row(r: &ExportRow, conversion: Option<&String>) -> Vec<Value> {
    let j = &r.job;
    let path = |p: &std::path::Path| Value::from(p.to_string_lossy());
    vec![
        json!(j.id.0),
        path(&j.source_path),
        json!(j.content_sha256),
        json!(conversion),
        json!(j.repair.name()),
        json!(j.rgb.map(|c| c.to_string())),
        json!(j.mdf()),
        json!(r.uploaded_at_ms.map(utc)),
        json!(j.credits_before),
        json!(r.credits_after),
        j.output_path.as_deref().map_or(Value::Null, path),
        json!(j.output_sha256),
        json!(j.state().as_str()),
        json!(j.reason),
        json!(j.charges),
        json!(utc(j.created_at_ms)),
        json!(utc(j.updated_at_ms)),
    ]
}

fn event_row(e: &ProvenanceEvent) -> Vec<Value> {
    let ev = &e.event;
    vec![
        json!(ev.id),
        json!(ev.job.0),
        json!(e.kind),
        json!(utc(ev.at_ms)),
        json!(e.source_path.to_string_lossy()),
        json!(e.source_sha256),
        json!(e.agent),
        json!(SERVICE),
        json!(e.repair.name()),
        json!(ev.to.as_str()),
        json!(ev.from.map(|s| s.as_str())),
        json!(ev.detail),
    ]
}

/// Unix milliseconds as RFC 3339 UTC, e.g. `2026-11-30T08:15:02.125Z`.
fn utc(ms: i64) -> String {
    let t = match u64::try_from(ms) {
        Ok(ms) => UNIX_EPOCH + Duration::from_millis(ms),
        Err(_) => UNIX_EPOCH,
    };
    humantime::format_rfc3339_millis(t).to_string()
}

/// `--since`: RFC 3339 (`Z` or an offset such as `+01:00`) or a plain `YYYY-MM-DD` (00:00
/// UTC), as unix milliseconds.
pub(super) fn parse_since(s: &str) -> anyhow::Result<i64> {
    let bad = || {
        anyhow::anyhow!(
            "--since {s:?} is not a date: give RFC 3339 (2026-11-30T08:00:00Z, \
             2026-11-30T09:00:00+01:00) or a day (2026-11-30, from 00:00 UTC)"
        )
    };
    let s = s.trim();
    let (base, offset_s) = match s.len() {
        10 => (format!("{s}T00:00:00Z"), 0),
        n if n > 25 || !s.is_char_boundary(n.saturating_sub(6)) => return Err(bad()),
        n => {
            let (head, tail) = s.split_at(n.saturating_sub(6));
            let t = tail.as_bytes();
            match (t.first(), t.get(3)) {
                (Some(sign @ (b'+' | b'-')), Some(b':')) if tail != "+00:00" => {
                    let num = |r: std::ops::Range<usize>| tail[r].parse::<i64>().ok();
                    let (h, m) = (num(1..3).ok_or_else(bad)?, num(4..6).ok_or_else(bad)?);
                    let sign = if *sign == b'+' { 1 } else { -1 };
                    (format!("{head}Z"), sign * (h * 3600 + m * 60))
                }
                _ => (s.to_string(), 0),
            }
        }
    };
    let t = humantime::parse_rfc3339(&base.to_ascii_uppercase()).map_err(|_| bad())?;
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| bad())?
        .as_millis() as i64;
    // 09:00+01:00 is 08:00 UTC.
    Ok(ms - offset_s * 1000)
}

fn write_csv(out: &mut impl Write, columns: &[&str], rows: &[Vec<Value>]) -> std::io::Result<()> {
    writeln!(out, "{}", columns.join(","))?;
    for row in rows {
        let cells: Vec<String> = row.iter().map(csv_cell).collect();
        // CRLF would be RFC 4180's; LF is what spreadsheet tools and `csv` readers accept.
        writeln!(out, "{}", cells.join(","))?;
    }
    Ok(())
}

/// One CSV cell: empty for null, quoted (quotes doubled) when it holds a comma, quote or
/// line break.
fn csv_cell(v: &Value) -> String {
    let s = match v {
        Value::Null => return String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn write_json(out: &mut impl Write, columns: &[&str], rows: &[Vec<Value>]) -> std::io::Result<()> {
    out.write_all(b"[")?;
    for (i, row) in rows.iter().enumerate() {
        let obj: serde_json::Map<String, Value> = columns
            .iter()
            .map(|c| c.to_string())
            .zip(row.iter().cloned())
            .collect();
        out.write_all(if i == 0 { b"\n  " } else { b",\n  " })?;
        serde_json::to_writer(&mut *out, &obj)?;
    }
    out.write_all(if rows.is_empty() { b"]\n" } else { b"\n]\n" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_day_or_rfc3339_with_an_offset() {
        let day = parse_since("2026-11-30").unwrap();
        assert_eq!(utc(day), "2026-11-30T00:00:00.000Z");
        assert_eq!(parse_since("2026-11-30T00:00:00Z").unwrap(), day);
        assert_eq!(parse_since("2026-11-30T00:00:00+00:00").unwrap(), day);
        assert_eq!(parse_since("2026-11-30T01:30:00+01:30").unwrap(), day);
        assert_eq!(parse_since("2026-11-29T23:00:00-01:00").unwrap(), day);
        assert_eq!(parse_since("2026-11-30T00:00:00.250Z").unwrap(), day + 250);
        for bad in ["yesterday", "2026-13-01", "2026-11-30 08", "30/11/2026", ""] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn csv_cells_are_quoted_only_when_needed() {
        assert_eq!(csv_cell(&json!(null)), "");
        assert_eq!(csv_cell(&json!(42)), "42");
        assert_eq!(csv_cell(&json!("a b")), "a b");
        assert_eq!(csv_cell(&json!("a,b")), "\"a,b\"");
        assert_eq!(csv_cell(&json!("say \"hi\"\n")), "\"say \"\"hi\"\"\n\"");
    }
}
