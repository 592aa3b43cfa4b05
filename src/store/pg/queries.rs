//! PLACEHOLDER (queries): replaced by the PostgreSQL implementation.

#![allow(unused_variables)]

use super::PgStore;
use super::unbuilt;
#[allow(unused_imports)]
use crate::media::mover::MovePlan;
#[allow(unused_imports)]
use crate::repair::{Repair, Rgb};
#[allow(unused_imports)]
use crate::store::*;
#[allow(unused_imports)]
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
#[allow(unused_imports)]
use std::path::{Path, PathBuf};

impl PgStore {
    pub async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        Err(unbuilt("get"))
    }

    pub async fn jobs_in(&self, state: State) -> Result<Vec<Job>, StoreError> {
        Err(unbuilt("jobs_in"))
    }

    pub async fn all_jobs(&self, filter: Option<State>) -> Result<Vec<Job>, StoreError> {
        Err(unbuilt("all_jobs"))
    }

    pub async fn oldest_queued(&self) -> Result<Option<Job>, StoreError> {
        Err(unbuilt("oldest_queued"))
    }

    pub async fn counts(&self) -> Result<BTreeMap<State, u64>, StoreError> {
        Err(unbuilt("counts"))
    }

    pub async fn job_count(&self) -> Result<u64, StoreError> {
        Err(unbuilt("job_count"))
    }

    pub async fn events(&self, id: JobId) -> Result<Vec<Event>, StoreError> {
        Err(unbuilt("events"))
    }

    pub async fn outcomes_since(&self, since_ms: i64) -> Result<BTreeMap<State, u64>, StoreError> {
        Err(unbuilt("outcomes_since"))
    }

    pub async fn last_event_id(&self) -> Result<i64, StoreError> {
        Err(unbuilt("last_event_id"))
    }

    pub async fn run_tally(&self, after_event: i64) -> Result<RunTally, StoreError> {
        Err(unbuilt("run_tally"))
    }

    pub async fn identity_twins(
        &self,
        ident: &Identity,
        excluding: JobId,
    ) -> Result<Vec<Job>, StoreError> {
        Err(unbuilt("identity_twins"))
    }

    pub async fn successor(&self, job: &Job) -> Result<Option<Job>, StoreError> {
        Err(unbuilt("successor"))
    }

    pub async fn renamed_from(&self, job: &Job) -> Result<Option<Job>, StoreError> {
        Err(unbuilt("renamed_from"))
    }

    pub async fn source_index(
        &self,
        repair: Repair,
        rgb: Option<Rgb>,
        output_dir: &Path,
    ) -> Result<HashMap<(PathBuf, u64, i64), State>, StoreError> {
        Err(unbuilt("source_index"))
    }

    pub async fn output_dirs(&self) -> Result<Vec<PathBuf>, StoreError> {
        Err(unbuilt("output_dirs"))
    }

    pub async fn job_folders(&self, states: &[State]) -> Result<BTreeSet<JobFolders>, StoreError> {
        Err(unbuilt("job_folders"))
    }

    pub async fn queue_id(&self) -> Result<String, StoreError> {
        Err(unbuilt("queue_id"))
    }

    pub async fn set_pause_note(&self, note: Option<&str>) -> Result<(), StoreError> {
        Err(unbuilt("set_pause_note"))
    }

    pub async fn pause_note(&self) -> Result<Option<(i64, String)>, StoreError> {
        Err(unbuilt("pause_note"))
    }

    pub async fn mark_run_started(&self) -> Result<i64, StoreError> {
        Err(unbuilt("mark_run_started"))
    }

    pub async fn last_run_started(&self) -> Result<Option<i64>, StoreError> {
        Err(unbuilt("last_run_started"))
    }
}
