//! `hili nodes`: the nodes of a shared queue, one row each — name, host, live or how it ended
//! (stopped cleanly, or silent since its last heartbeat), when it started, its heartbeat's age,
//! the leases it holds and its jobs by state — or, with `--json`, one array with times in
//! RFC 3339 UTC. Also the compact per-node section `hili status` adds on a shared queue. A
//! queue of its own (SQLite) has no nodes: one line says so and how to share one.

use jiff::tz::TimeZone;
use serde_json::{Value, json};

use super::Exit;
use super::args::NodesArgs;
use super::jobs::{local, plain_table, print_table, table_lines, utc};
use crate::config::Config;
use crate::store::{Location, NodeInfo, State, Store, now_ms};

pub(super) async fn nodes(config: &Config, args: NodesArgs) -> anyhow::Result<Exit> {
    let location = config.queue_location().map_err(super::ConfigProblem)?;
    if let Location::Sqlite(_) = location {
        // A program asking for JSON still gets an array (no nodes); the reason goes to stderr.
        match args.json {
            true => {
                println!("[]");
                eprintln!("hili: {}", not_shared(&location));
            }
            false => println!("{}", not_shared(&location)),
        }
        return Ok(Exit::Ok);
    }
    let store = Store::open_existing_at(&location).await?;
    let nodes = store.nodes().await?;
    store.close().await;
    let now = now_ms();
    if args.json {
        let all: Vec<Value> = nodes.iter().map(|n| node_json(n, now)).collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(Exit::Ok);
    }
    if nodes.is_empty() {
        println!(
            "no node has run on the shared queue {} yet: nodes appear once `hili run` starts \
             on a workstation configured with it",
            location.shown()
        );
        return Ok(Exit::Ok);
    }
    print_table(&nodes_table(&nodes, now, &TimeZone::system()));
    Ok(Exit::Ok)
}

/// The one line `hili nodes` prints for a queue of its own.
fn not_shared(location: &Location) -> String {
    format!(
        "the queue {} is this machine's own (SQLite), not shared: it has no nodes to list; to \
         share one queue between workstations, set [queue] database = \"postgres://…\" (and \
         [queue] node) in each one's hili.toml",
        location.shown()
    )
}

/// How a node is: `live`, `stopped` (signed off cleanly) or `silent` (its heartbeat stopped:
/// killed, crashed, or cut off; its leases have expired and the others took its work over).
fn status_word(n: &NodeInfo) -> &'static str {
    match (n.live, n.stopped_at_ms) {
        (true, _) => "live",
        (false, Some(_)) => "stopped",
        (false, None) => "silent",
    }
}

/// [`status_word`] with the moment a dead node ended, in local time.
fn liveness(n: &NodeInfo, tz: &TimeZone) -> String {
    match (n.live, n.stopped_at_ms) {
        (true, _) => "live".into(),
        (false, Some(at)) => format!("stopped {}", local(at, tz)),
        (false, None) => format!("silent since {}", local(n.heartbeat_at_ms, tz)),
    }
}

/// How long ago `at_ms` was, to the second: `4s ago`, `1h 2m 5s ago`.
fn age(now_ms: i64, at_ms: i64) -> String {
    let secs = u64::try_from((now_ms - at_ms).max(0) / 1000).unwrap_or(0);
    let d = humantime::format_duration(std::time::Duration::from_secs(secs));
    format!("{d} ago")
}

fn count(n: &NodeInfo, s: State) -> u64 {
    n.jobs.get(s.as_str()).copied().unwrap_or(0)
}

fn in_flight(n: &NodeInfo) -> u64 {
    State::ALL
        .iter()
        .filter(|s| s.in_flight())
        .map(|s| count(n, *s))
        .sum()
}

/// A node's jobs by state, the empty states left out: `queued 3, done 12`.
fn jobs_by_state(n: &NodeInfo) -> String {
    let parts: Vec<String> = State::ALL
        .iter()
        .filter_map(|s| match count(n, *s) {
            0 => None,
            c => Some(format!("{} {c}", s.as_str())),
        })
        .collect();
    match parts.is_empty() {
        true => "none".into(),
        false => parts.join(", "),
    }
}

fn nodes_table(nodes: &[NodeInfo], now: i64, tz: &TimeZone) -> comfy_table::Table {
    let mut table = plain_table(&[
        "node",
        "host",
        "state",
        "started",
        "heartbeat",
        "leases",
        "jobs",
    ]);
    for n in nodes {
        table.add_row(vec![
            n.name.clone(),
            n.host.clone(),
            liveness(n, tz),
            local(n.started_at_ms, tz),
            age(now, n.heartbeat_at_ms),
            n.leases.to_string(),
            jobs_by_state(n),
        ]);
    }
    table
}

/// A node as `hili nodes --json` gives it: every state counted (zeros included).
fn node_json(n: &NodeInfo, now: i64) -> Value {
    let jobs: serde_json::Map<String, Value> = State::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), json!(count(n, *s))))
        .collect();
    json!({
        "name": n.name,
        "host": n.host,
        "pid": n.pid,
        "version": n.version,
        "live": n.live,
        "status": status_word(n),
        "started_at": utc(n.started_at_ms),
        "heartbeat_at": utc(n.heartbeat_at_ms),
        "heartbeat_age_s": (now - n.heartbeat_at_ms).max(0) / 1000,
        "stopped_at": n.stopped_at_ms.map(utc),
        "leases": n.leases,
        "jobs": jobs,
    })
}

/// The nodes as `hili status --json` gives them (compact).
pub(super) fn status_json(nodes: &[NodeInfo], now: i64) -> Value {
    let all: Vec<Value> = nodes
        .iter()
        .map(|n| {
            json!({
                "name": n.name,
                "live": n.live,
                "status": status_word(n),
                "heartbeat_at": utc(n.heartbeat_at_ms),
                "heartbeat_age_s": (now - n.heartbeat_at_ms).max(0) / 1000,
                "leases": n.leases,
                "queued": count(n, State::Queued),
                "in_flight": in_flight(n),
                "done": count(n, State::Done),
            })
        })
        .collect();
    Value::Array(all)
}

/// The nodes as `hili status` shows them: a heading, then one indented row each.
pub(super) fn status_lines(nodes: &[NodeInfo], now: i64) -> Vec<String> {
    if nodes.is_empty() {
        return vec!["nodes: none has run on this shared queue yet".into()];
    }
    let mut table = plain_table(&[
        "node",
        "state",
        "heartbeat",
        "leases",
        "queued",
        "in flight",
        "done",
    ]);
    for n in nodes {
        table.add_row(vec![
            n.name.clone(),
            status_word(n).to_string(),
            age(now, n.heartbeat_at_ms),
            n.leases.to_string(),
            count(n, State::Queued).to_string(),
            in_flight(n).to_string(),
            count(n, State::Done).to_string(),
        ]);
    }
    let mut out = vec!["nodes of the shared queue (`hili nodes` for more):".to_string()];
    out.extend(table_lines(&table).into_iter().map(|l| format!("  {l}")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_026_502_125; // 2026-11-30T08:15:02.125Z

    fn node(name: &str, live: bool, stopped: Option<i64>, jobs: &[(&str, u64)]) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            host: format!("{name}.lab"),
            pid: 42,
            version: "0.1.0".into(),
            started_at_ms: NOW - 3_600_000,
            heartbeat_at_ms: NOW - 65_000,
            stopped_at_ms: stopped,
            live,
            leases: u64::from(live),
            jobs: jobs.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
        }
    }

    fn fleet() -> Vec<NodeInfo> {
        vec![
            node(
                "scan-1",
                true,
                None,
                &[("queued", 3), ("processing", 2), ("downloading", 1)],
            ),
            node("scan-2", false, Some(NOW - 60_000), &[("done", 12)]),
            node("scan-3", false, None, &[]),
        ]
    }

    #[test]
    fn the_table_says_how_each_node_is_and_what_it_holds() {
        let tz = TimeZone::fixed(jiff::tz::offset(1));
        let lines = table_lines(&nodes_table(&fleet(), NOW, &tz));
        assert_eq!(
            lines,
            [
                "node    host        state                             started              heartbeat  leases  jobs",
                "scan-1  scan-1.lab  live                              2026-11-30 08:15:02  1m 5s ago  1       queued 3, processing 2, downloading 1",
                "scan-2  scan-2.lab  stopped 2026-11-30 09:14:02       2026-11-30 08:15:02  1m 5s ago  0       done 12",
                "scan-3  scan-3.lab  silent since 2026-11-30 09:13:57  2026-11-30 08:15:02  1m 5s ago  0       none",
            ],
            "{lines:#?}"
        );
    }

    #[test]
    fn json_gives_utc_times_and_every_state() {
        let v = node_json(&fleet()[1], NOW);
        assert_eq!(v["status"], "stopped");
        assert_eq!(v["live"], false);
        assert_eq!(v["started_at"], "2026-11-30T07:15:02.125Z");
        assert_eq!(v["heartbeat_at"], "2026-11-30T08:13:57.125Z");
        assert_eq!(v["stopped_at"], "2026-11-30T08:14:02.125Z");
        assert_eq!(v["heartbeat_age_s"], 65);
        assert_eq!(v["jobs"]["done"], 12);
        assert_eq!(v["jobs"]["queued"], 0);
        assert_eq!(v["jobs"].as_object().map(|o| o.len()), Some(8));
        assert_eq!(node_json(&fleet()[2], NOW)["status"], "silent");
        assert_eq!(node_json(&fleet()[2], NOW)["stopped_at"], Value::Null);
    }

    #[test]
    fn status_shows_each_node_compactly() {
        let lines = status_lines(&fleet(), NOW);
        assert_eq!(
            lines,
            [
                "nodes of the shared queue (`hili nodes` for more):",
                "  node    state    heartbeat  leases  queued  in flight  done",
                "  scan-1  live     1m 5s ago  1       3       3          0",
                "  scan-2  stopped  1m 5s ago  0       0       0          12",
                "  scan-3  silent   1m 5s ago  0       0       0          0",
            ],
            "{lines:#?}"
        );
        let v = status_json(&fleet(), NOW);
        assert_eq!(v[0]["in_flight"], 3);
        assert_eq!(v[1]["done"], 12);
        assert_eq!(v[2]["status"], "silent");
        assert_eq!(
            status_lines(&[], NOW),
            ["nodes: none has run on this shared queue yet"]
        );
    }

    #[test]
    fn a_queue_of_its_own_says_how_to_share_one() {
        let line = not_shared(&Location::Sqlite("/var/lib/hili/hili.db".into()));
        assert!(line.contains("/var/lib/hili/hili.db"), "{line}");
        assert!(line.contains("not shared"), "{line}");
        assert!(line.contains("database = \"postgres://…\""), "{line}");
        assert!(!line.contains('\n'));
    }
}
