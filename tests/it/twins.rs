//! The same photo again, when the first one's result file is out of reach: deleted, or on
//! another node's disk (a shared queue), or replaced by something else at its path. The
//! service still keeps the result for an hour after processing, so it is fetched again — never
//! paid for twice, and never taken from a file that is not that result.

use hili::repair::Repair;
use hili::store::State;

use crate::helpers::{Env, fast_sim, write_jpeg};

/// A result's pixels (its metadata names the source file and the run, so bytes differ).
fn pixels(path: &std::path::Path) -> Vec<u8> {
    image::open(path)
        .expect("a decodable result")
        .to_rgb8()
        .into_raw()
}

/// Runs the queue once and returns the simulator's total charges.
async fn run(env: &Env) -> u64 {
    env.run_once(env.settings()).await;
    env.sim.ledger().total_charges
}

#[tokio::test]
async fn a_deleted_result_of_the_same_photo_is_fetched_again_without_a_credit() {
    let env = Env::new(fast_sim()).await;
    write_jpeg(&env.inbox.join("a.jpg"), 7);
    env.add(Repair::Sr, None).await;
    assert_eq!(run(&env).await, 1);
    let first = env.outputs();
    assert_eq!(first.len(), 1, "{first:?}");
    let result = pixels(&first[0]);
    std::fs::remove_file(&first[0]).unwrap();

    std::fs::copy(env.inbox.join("a.jpg"), env.inbox.join("again.jpg")).unwrap();
    env.add(Repair::Sr, None).await;
    assert_eq!(run(&env).await, 1, "the same photo is never paid twice");
    let outs = env.outputs();
    assert_eq!(outs.len(), 1, "{outs:?}");
    assert!(pixels(&outs[0]) == result, "the same result, fetched again");
    let store = env.store().await;
    let done = store.jobs_in(State::Done).await.unwrap();
    assert_eq!(done.len(), 2);
    let again = done.iter().max_by_key(|j| j.id).unwrap();
    let events = store.events(again.id).await.unwrap();
    assert!(
        events.iter().any(|e| e
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("again: no credit"))),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_file_at_the_results_path_that_is_not_the_result_is_not_copied() {
    let env = Env::new(fast_sim()).await;
    write_jpeg(&env.inbox.join("a.jpg"), 7);
    env.add(Repair::Sr, None).await;
    assert_eq!(run(&env).await, 1);
    let first = env.outputs();
    let result = pixels(&first[0]);
    // Another photo at the same path (as another workstation's disk would hold).
    write_jpeg(&first[0], 99);
    let impostor = std::fs::read(&first[0]).unwrap();
    assert!(pixels(&first[0]) != result);

    std::fs::copy(env.inbox.join("a.jpg"), env.inbox.join("again.jpg")).unwrap();
    env.add(Repair::Sr, None).await;
    assert_eq!(run(&env).await, 1, "fetched, not paid");
    let again = env
        .outputs()
        .into_iter()
        .find(|p| p.to_string_lossy().contains("again"))
        .expect("the second job's result");
    assert!(
        pixels(&again) == result,
        "the real result, not the file at the path"
    );
    assert!(
        std::fs::read(&first[0]).unwrap() == impostor,
        "left as it was"
    );
}
