//! The proof of the fleet chaos run (`fleet_chaos`), from the simulator's ledger, the shared
//! queue and the output folders: no content paid twice, every file done or held, every hold a
//! charge (or counted as one of several answers lost in one epoch), every output intact.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use hili::store::State;

use crate::chaos::check_trail;
use crate::fleet_chaos::{Node, observe};
use crate::helpers::*;

/// What the proof found, for the figure line.
pub(crate) struct Proof {
    pub(crate) faults: u64,
    pub(crate) fault_kinds: BTreeMap<String, u64>,
    pub(crate) charges: u64,
    pub(crate) duplicate_charges: u64,
    pub(crate) outputs: usize,
    pub(crate) held: usize,
    pub(crate) unsure_unpaid: usize,
    pub(crate) multi_loss: usize,
    pub(crate) lost: usize,
    /// Done jobs by the node whose upload (or copy) finished them.
    pub(crate) done_by: BTreeMap<String, usize>,
}

/// The ledger, the queue and the output folders agree: see the module documentation.
pub(crate) async fn prove(
    env: &Env,
    url: &str,
    nodes: &[Node],
    shared: &Path,
    files: usize,
) -> Proof {
    let ledger = env.sim.ledger();
    let charged: HashSet<&str> = ledger.charges.iter().map(|c| c.sha256.as_str()).collect();
    let store = observe(url, env.dir.path()).await.unwrap();
    let jobs = store.all_jobs(None).await.unwrap();
    assert_eq!(jobs.len(), files, "one job per file");
    let mut sources = HashSet::new();
    let (mut done, mut held, mut unsure_unpaid) = (0usize, 0usize, 0usize);
    let mut contents: HashMap<String, Vec<i64>> = HashMap::new();
    for j in &jobs {
        assert!(
            sources.insert(j.source_path.clone()),
            "two jobs for one file"
        );
        // A job done by copying its twin's result never sent its file, and its row keeps no
        // content hash: the source (left in place) says what it is.
        let sha = j.content_sha256.clone().unwrap_or_else(|| {
            hili::media::sha256_file(&j.source_path).expect("the source is left in place")
        });
        match check_job(j, &sha, &charged) {
            State::Done => done += 1,
            _ if charged.contains(sha.as_str()) => held += 1,
            _ => (held, unsure_unpaid) = (held + 1, unsure_unpaid + 1),
        }
        contents.entry(sha).or_default().push(j.id.0);
        check_trail(&store, j).await;
    }
    store.close().await;
    let unaccounted = ledger
        .charges
        .iter()
        .filter(|c| !contents.contains_key(&c.sha256))
        .count();
    let lost = files.saturating_sub(done + held) + unaccounted;
    assert_eq!(lost, 0, "lost photos or charges");
    if ledger.duplicate_charges > 0 {
        let mut seen = HashSet::new();
        for c in &ledger.charges {
            if !seen.insert(c.sha256.as_str()) {
                let ids = contents.get(&c.sha256).cloned().unwrap_or_default();
                eprintln!("charged twice: {} (mdf {}), jobs {ids:?}", c.sha256, c.mdf);
                eprintln!("{}", trails(url, &ids).await);
            }
        }
        panic!(
            "{} charges of a content already charged",
            ledger.duplicate_charges
        );
    }
    let (multi_loss, done_by) = from_sql(url).await;
    assert!(
        unsure_unpaid == 0 || multi_loss > 0,
        "{unsure_unpaid} uncharged jobs held, but no epoch lost several answers at once"
    );
    let mut outputs = files_under(&shared.join("out"));
    for node in nodes {
        outputs.extend(files_under(&node.out));
    }
    for f in files_under(env.dir.path()) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".hili-tmp-"),
            "temp file left: {}",
            f.display()
        );
    }
    outputs.retain(|f| !f.file_name().unwrap().to_string_lossy().starts_with('.'));
    assert_eq!(outputs.len(), done, "one output per done job");
    Proof {
        faults: ledger.faults.values().sum(),
        fault_kinds: ledger.faults.clone(),
        charges: ledger.total_charges,
        duplicate_charges: ledger.duplicate_charges,
        outputs: outputs.len(),
        held,
        unsure_unpaid,
        multi_loss,
        lost,
        done_by,
    }
}

/// One job's end: done with its output intact and its content charged, or held for a charge
/// (or, uncharged, one of several answers lost in one epoch, or the twin of such a job).
fn check_job(j: &hili::store::Job, sha: &str, charged: &HashSet<&str>) -> State {
    match j.state() {
        State::Done => {
            let out = j.output_path.clone().expect("a done job has an output");
            assert_eq!(
                hili::media::sha256_file(&out).ok(),
                j.output_sha256.clone(),
                "job {}: output {} missing or not its recorded sha256",
                j.id,
                out.display()
            );
            assert!(charged.contains(sha), "job {} done, never charged", j.id);
        }
        State::Held => {
            let reason = j.reason.clone().unwrap_or_default();
            let twin = reason.starts_with("same photo as job");
            assert!(
                reason.contains("charged, result unknown") || twin,
                "job {} held for an unexplained reason: {reason}",
                j.id
            );
            assert!(
                charged.contains(sha) || reason.starts_with("perhaps charged") || twin,
                "job {} held as charged, but the simulator never charged it: {reason}",
                j.id
            );
        }
        other => panic!("job {} ended {other:?}: {:?}", j.id, j.reason),
    }
    j.state()
}

/// The events of jobs `ids`, with the node that wrote each, for a failure's message.
async fn trails(url: &str, ids: &[i64]) -> String {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
        .await
        .unwrap();
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT format('  job %s %s -> %s at %s by %s: %s', job_id, from_state, to_state, at, \
         node, detail) FROM events WHERE job_id = ANY($1) ORDER BY id",
    )
    .bind(ids)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    rows.join("\n")
}

/// Straight from the database: the credit epochs that closed with several answers lost (the
/// count could not tell which were charged), and the done jobs by the node that finished them.
async fn from_sql(url: &str) -> (usize, BTreeMap<String, usize>) {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM credit_epochs WHERE verdict = 'ambiguous' AND lost > 1",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let by: Vec<(Option<String>, i64)> = sqlx::query_as(
        "SELECT node, COUNT(*) FROM events WHERE to_state = 'done' GROUP BY node ORDER BY node",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let by = by
        .into_iter()
        .map(|(node, n)| (node.unwrap_or_default(), n as usize))
        .collect();
    (n as usize, by)
}
