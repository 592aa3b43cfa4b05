//! Tests of the job listings of the shared queue (`queries.rs`), on a test server.

use super::*;
use crate::store::pg::test_store;

fn ids(jobs: &[Job]) -> Vec<JobId> {
    jobs.iter().map(|j| j.id).collect()
}

#[tokio::test]
async fn listings_counts_and_events_read_every_job_in_id_order() {
    let Some((store, _dir)) = test_store("node-a").await else {
        return;
    };
    assert_eq!(store.oldest_queued().await.unwrap(), None);
    assert_eq!(store.job_count().await.unwrap(), 0);
    let a = insert_job(&store, "a.jpg", "").await;
    let b = insert_job(&store, "b.jpg", "state = 'done', mdf = 'm1'").await;
    let c = insert_job(&store, "c.jpg", "").await;

    let got = store.get(b).await.unwrap().expect("job b");
    assert_eq!(got.state(), State::Done);
    assert_eq!(got.mdf(), Some("m1"));
    assert_eq!(got.source_path, Path::new("/in/b.jpg"));
    assert_eq!(store.get(JobId(c.0 + 100)).await.unwrap(), None);
    assert_eq!(ids(&store.all_jobs(None).await.unwrap()), [a, b, c]);
    assert_eq!(ids(&store.jobs_in(State::Queued).await.unwrap()), [a, c]);
    assert_eq!(ids(&store.all_jobs(Some(State::Done)).await.unwrap()), [b]);
    assert_eq!(store.oldest_queued().await.unwrap().map(|j| j.id), Some(a));

    let counts = store.counts().await.unwrap();
    assert_eq!(counts.len(), State::ALL.len());
    assert_eq!(counts[&State::Queued], 2);
    assert_eq!(counts[&State::Done], 1);
    assert_eq!(counts[&State::Failed], 0);
    assert_eq!(store.job_count().await.unwrap(), 3);

    sqlx::query(
        "INSERT INTO events (job_id, from_state, to_state, at, detail) \
         VALUES ($1, 'queued', 'uploading', 5, NULL), ($1, 'uploading', 'uploading', 6, 'x')",
    )
    .bind(a.0)
    .execute(store.pool())
    .await
    .unwrap();
    let events = store.events(a).await.unwrap();
    let trail: Vec<_> = events.iter().map(|e| (e.from, e.to, e.at_ms)).collect();
    assert_eq!(
        trail,
        [
            (None, State::Queued, 1),
            (Some(State::Queued), State::Uploading, 5),
            (Some(State::Uploading), State::Uploading, 6),
        ]
    );
    assert_eq!(events[0].detail.as_deref(), Some("enqueued"));
    assert!(events.iter().all(|e| e.job == a));
    assert_eq!(store.events(b).await.unwrap().len(), 1);
}

#[tokio::test]
async fn twins_share_content_repair_and_colour() {
    let Some((store, _dir)) = test_store("node-a").await else {
        return;
    };
    let a = insert_job(&store, "a.jpg", "content_sha256 = 'h1'").await;
    let b = insert_job(&store, "b.jpg", "content_sha256 = 'h1'").await;
    let _other_hash = insert_job(&store, "c.jpg", "content_sha256 = 'h2'").await;
    let _other_repair = insert_job(&store, "d.jpg", "content_sha256 = 'h1', repair = 'bg'").await;
    let e = insert_job(&store, "e.jpg", "content_sha256 = 'h1', rgb = '1,2,3'").await;
    let f = insert_job(&store, "f.jpg", "content_sha256 = 'h1'").await;
    let ident = |rgb| Identity {
        content_sha256: "h1".into(),
        repair: Repair::Sr,
        rgb,
    };
    assert_eq!(
        ids(&store.identity_twins(&ident(None), a).await.unwrap()),
        [b, f]
    );
    assert_eq!(
        ids(&store.identity_twins(&ident(None), f).await.unwrap()),
        [a, b]
    );
    let coloured = ident(Some(Rgb(1, 2, 3)));
    assert_eq!(ids(&store.identity_twins(&coloured, a).await.unwrap()), [e]);
    assert!(store.identity_twins(&coloured, e).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_later_job_at_the_path_or_of_the_renamed_file_succeeds_a_job() {
    let Some((store, _dir)) = test_store("node-a").await else {
        return;
    };
    let file = "source_dev = 7, source_ino = 8";
    let a = insert_job(&store, "a.jpg", file).await;
    let get = |id| {
        let store = store.clone();
        async move { store.get(id).await.unwrap().expect("job") }
    };
    assert_eq!(store.successor(&get(a).await).await.unwrap(), None);
    // A skipped job at the same path does not count; a renamed copy (same device, inode,
    // size and mtime) does; an inode reused by another file (other mtime) does not.
    insert_job(&store, "a.jpg", "state = 'skipped'").await;
    insert_job(
        &store,
        "reused.jpg",
        "source_dev = 7, source_ino = 8, mtime_ns = 2",
    )
    .await;
    let renamed = insert_job(&store, "renamed.jpg", file).await;
    let again = insert_job(&store, "renamed.jpg", "").await;
    assert_eq!(
        store.successor(&get(a).await).await.unwrap().map(|j| j.id),
        Some(renamed)
    );
    assert_eq!(
        store
            .successor(&get(renamed).await)
            .await
            .unwrap()
            .map(|j| j.id),
        Some(again)
    );
    // A job without a file id only follows by path (NULLs never match).
    let bare = insert_job(&store, "bare.jpg", "").await;
    insert_job(&store, "other.jpg", "").await;
    assert_eq!(store.successor(&get(bare).await).await.unwrap(), None);
}

#[tokio::test]
async fn a_job_is_renamed_from_the_latest_earlier_job_that_sent_the_same_file() {
    let Some((store, _dir)) = test_store("node-a").await else {
        return;
    };
    let file = "source_dev = 7, source_ino = 8, content_sha256 = 'h'";
    let sent = format!("{file}, state = 'done'");
    let first = insert_job(&store, "old.jpg", &sent).await;
    let second = insert_job(&store, "older.jpg", &sent).await;
    insert_job(&store, "queued.jpg", file).await;
    insert_job(&store, "new.jpg", &format!("{sent}, rgb = '1,1,1'")).await;
    let new = insert_job(&store, "new.jpg", file).await;
    let job = store.get(new).await.unwrap().expect("job");
    assert_eq!(
        store.renamed_from(&job).await.unwrap().map(|j| j.id),
        Some(second)
    );
    let job = store.get(second).await.unwrap().expect("job");
    assert_eq!(
        store.renamed_from(&job).await.unwrap().map(|j| j.id),
        Some(first)
    );
    // Without its hash (or file id) a job cannot be matched.
    let unhashed = insert_job(&store, "x.jpg", "source_dev = 7, source_ino = 8").await;
    let job = store.get(unhashed).await.unwrap().expect("job");
    assert_eq!(store.renamed_from(&job).await.unwrap(), None);
}

#[tokio::test]
async fn the_source_index_keeps_the_latest_job_of_each_file_with_these_settings() {
    let Some((store, _dir)) = test_store("node-a").await else {
        return;
    };
    insert_job(&store, "a.jpg", "state = 'failed'").await;
    insert_job(&store, "a.jpg", "state = 'done'").await;
    insert_job(&store, "b.jpg", "mtime_ns = 5").await;
    insert_job(&store, "c.jpg", "repair = 'bg', rgb = '1,2,3'").await;
    insert_job(&store, "d.jpg", "output_dir = '\\x2f6f74686572'::bytea").await;
    let index = store
        .source_index(Repair::Sr, None, Path::new("/out"))
        .await
        .unwrap();
    let expect: HashMap<_, _> = [
        ((PathBuf::from("/in/a.jpg"), 10, 1), State::Done),
        ((PathBuf::from("/in/b.jpg"), 10, 5), State::Queued),
    ]
    .into();
    assert_eq!(index, expect);
    let index = store
        .source_index(Repair::Bg, Some(Rgb(1, 2, 3)), Path::new("/out"))
        .await
        .unwrap();
    assert_eq!(index.len(), 1);
    assert!(index.contains_key(&(PathBuf::from("/in/c.jpg"), 10, 1)));
    let index = store
        .source_index(Repair::Sr, None, Path::new("/other"))
        .await
        .unwrap();
    assert_eq!(index.len(), 1);
}

#[tokio::test]
async fn fetch_jobs_reads_inside_a_transaction_with_list_binds() {
    let Some((store, _dir)) = test_store("node-a").await else {
        return;
    };
    let a = insert_job(&store, "a.jpg", "").await;
    let b = insert_job(&store, "b.jpg", "").await;
    insert_job(&store, "c.jpg", "").await;
    let mut tx = store.begin("a test").await.unwrap();
    sqlx::query("UPDATE jobs SET state = 'held' WHERE id = $1")
        .bind(b.0)
        .execute(&mut *tx)
        .await
        .unwrap();
    let sql = "SELECT {cols} FROM jobs WHERE id = ANY($1) AND state = ANY($2) \
               AND rgb IS NOT DISTINCT FROM $3 ORDER BY id FOR UPDATE";
    let binds = || {
        [
            PgBind::Ints(vec![a.0, b.0]),
            PgBind::Strs(vec!["held".into()]),
            PgBind::OptStr(None),
        ]
    };
    let seen = fetch_jobs(&mut *tx, sql, binds(), "a test").await.unwrap();
    assert_eq!(ids(&seen), [b]);
    // Uncommitted: the pool does not see it yet; after the commit it does.
    assert!(
        store
            .select_jobs(sql, binds(), "a test")
            .await
            .unwrap()
            .is_empty()
    );
    tx.commit().await.unwrap();
    assert_eq!(
        ids(&store.select_jobs(sql, binds(), "a test").await.unwrap()),
        [b]
    );
}
