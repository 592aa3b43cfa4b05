//! Integration tests: seeing the fleet. `hili nodes` and `hili status`, run as binaries on a
//! shared queue (a fresh database of the PostgreSQL test server; skipped without
//! `HILI_TEST_DATABASE_URL`) where three nodes have joined — "a" live with a job in flight
//! and two queued, "b" signed off, "c" silent — and on a queue of its own (SQLite), where
//! `hili nodes` answers in one line.

use std::path::PathBuf;

use serde_json::Value;

use crate::helpers::backend::{Backend, Queue};
use crate::helpers::{Env, fast_sim};
use hili::store::{EnqueueOutcome, NewJob, PgStore, Store, UploadIntent};

/// A photo on `node`'s own disk.
fn photo_on(node: &str, name: &str) -> NewJob {
    let inbox = PathBuf::from(format!("/scans/{node}/in"));
    NewJob {
        source_path: inbox.join(name),
        source_root: inbox,
        output_dir: PathBuf::from(format!("/scans/{node}/out")),
        repair: hili::repair::Repair::Sr,
        rgb: None,
        size: 4321,
        mtime_ns: 1_700_000_000_000_000_000,
        file_id: None,
        force: false,
    }
}

/// The fleet described at the top, on `queue`. Returns the node handles (kept open for the
/// test's length, as running daemons would be).
async fn fleet(queue: &Queue) -> Vec<PgStore> {
    let a = queue.pg("a").await.expect("node a");
    let b = queue.pg("b").await.expect("node b");
    let c = queue.pg("c").await.expect("node c");
    for n in [&a, &b, &c] {
        n.join().await.expect("join");
    }
    let store = Store::new(a.clone());
    let mut ids = Vec::new();
    for name in ["1.jpg", "2.jpg", "3.jpg"] {
        match store.enqueue(photo_on("a", name)).await.unwrap() {
            EnqueueOutcome::Queued(id) => ids.push(id),
            other => panic!("expected a new job, got {other:?}"),
        }
    }
    let sha = "e".repeat(64);
    let intent = UploadIntent {
        epoch: None,
        credits_before: 50,
        content_sha256: Some(&sha),
        exclusive: true,
    };
    store.begin_upload_with(ids[0], &intent).await.unwrap();
    a.heartbeat().await.unwrap();
    b.heartbeat().await.unwrap();
    b.leave().await.unwrap();
    // c's process vanished a minute ago: its last heartbeat is put back in time (waiting out
    // the real timeout would make the test slow).
    let pool = sqlx::PgPool::connect(queue.url().unwrap()).await.unwrap();
    sqlx::query(
        "UPDATE nodes SET heartbeat_at = heartbeat_at - 60000, \
         started_at = started_at - 120000 WHERE name = 'c'",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    vec![a, b, c]
}

/// An environment whose config names the shared queue, as node "viewer" (which only reads).
async fn env_on(queue: &Queue) -> Env {
    let env = Env::new(fast_sim()).await;
    let text = std::fs::read_to_string(&env.config).unwrap();
    let sqlite = format!("database = \"{}\"", env.db.display());
    assert!(text.contains(&sqlite), "{text}");
    let shared = format!("database = \"{}\"\nnode = \"viewer\"", queue.url().unwrap());
    std::fs::write(&env.config, text.replace(&sqlite, &shared)).unwrap();
    env
}

fn by_name<'v>(all: &'v Value, name: &str) -> &'v Value {
    all.as_array()
        .and_then(|a| a.iter().find(|n| n["name"] == name))
        .unwrap_or_else(|| panic!("no node {name} in {all:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_and_status_show_each_node_of_a_shared_queue() {
    let Some(queue) = Backend::Postgres.place().await else {
        return;
    };
    let _nodes = fleet(&queue).await;
    let env = env_on(&queue).await;

    let out = env.run_hili(["nodes", "--json"]).await;
    out.expect_code(0);
    let all: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out:?}"));
    assert_eq!(all.as_array().map(Vec::len), Some(3), "{all:#}");
    let a = by_name(&all, "a");
    assert_eq!(
        (&a["status"], &a["live"], &a["leases"]),
        (&"live".into(), &true.into(), &1.into()),
        "{a:#}"
    );
    assert_eq!(
        (&a["jobs"]["queued"], &a["jobs"]["uploading"]),
        (&2.into(), &1.into())
    );
    assert!(
        a["heartbeat_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{a:#}"
    );
    let b = by_name(&all, "b");
    assert_eq!(
        (&b["status"], &b["live"]),
        (&"stopped".into(), &false.into())
    );
    assert!(
        b["stopped_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{b:#}"
    );
    let c = by_name(&all, "c");
    assert_eq!(
        (&c["status"], &c["stopped_at"]),
        (&"silent".into(), &Value::Null)
    );
    assert!(
        c["heartbeat_age_s"].as_i64().is_some_and(|s| s >= 59),
        "{c:#}"
    );

    let out = env.run_hili(["nodes"]).await;
    out.expect_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("node  ") && lines[0].ends_with("jobs"),
        "{}",
        out.both()
    );
    let row = |name: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}\n{}", out.both()))
            .to_string()
    };
    assert!(row("a").contains(" live ") && row("a").ends_with("queued 2, uploading 1"));
    assert!(
        row("b").contains(" stopped 20") && row("b").ends_with("none"),
        "{}",
        row("b")
    );
    assert!(row("c").contains(" silent since 20"), "{}", row("c"));
    assert!(
        row("c").contains(" 1m") && row("c").contains(" ago"),
        "{}",
        row("c")
    );
    assert!(
        !out.stdout.contains("viewer"),
        "reading does not join\n{}",
        out.both()
    );

    let out = env.run_hili(["status", "--json"]).await;
    out.expect_code(0);
    let status: Value = serde_json::from_str(&out.stdout).unwrap();
    let a = by_name(&status["nodes"], "a");
    assert_eq!(
        (&a["queued"], &a["in_flight"], &a["done"], &a["leases"]),
        (&2.into(), &1.into(), &0.into(), &1.into()),
        "{a:#}"
    );
    assert_eq!(by_name(&status["nodes"], "c")["status"], "silent");

    let out = env.run_hili(["status"]).await;
    out.expect_code(0);
    let text = &out.stdout;
    let at = text
        .find("nodes of the shared queue")
        .unwrap_or_else(|| panic!("no node section\n{}", out.both()));
    let section: Vec<&str> = text[at..].lines().collect();
    assert!(section[1].trim_start().starts_with("node "), "{section:#?}");
    let a_row: Vec<&str> = section[2].split_whitespace().collect();
    assert_eq!(a_row[..2], ["a", "live"], "{section:#?}");
    assert_eq!(
        a_row[a_row.len() - 4..],
        ["1", "2", "1", "0"],
        "{section:#?}"
    );
    assert!(section[3].split_whitespace().take(2).eq(["b", "stopped"]));
    assert!(section[4].split_whitespace().take(2).eq(["c", "silent"]));
}

#[tokio::test]
async fn a_queue_of_its_own_has_no_nodes_and_says_how_to_share_one() {
    let env = Env::new(fast_sim()).await;
    env.store().await.close().await;
    let out = env.run_hili(["nodes"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.both());
    assert!(out.stdout.contains("not shared"), "{}", out.both());
    assert!(out.stdout.contains(&env.db.display().to_string()));
    assert!(out.stdout.contains("[queue] database = \"postgres://"));
    let out = env.run_hili(["nodes", "--json"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout.trim(), "[]", "{}", out.both());
    let out = env.run_hili(["status", "--json"]).await;
    out.expect_code(0);
    let status: Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(status.get("nodes").is_none(), "{status:#}");
    let out = env.run_hili(["status"]).await;
    assert!(!out.stdout.contains("nodes"), "{}", out.both());
}
