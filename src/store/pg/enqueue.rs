//! PLACEHOLDER (enqueue): replaced by the PostgreSQL implementation.

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
    pub async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<EnqueueOutcome>, StoreError> {
        Err(unbuilt("enqueue_many"))
    }

    pub async fn enqueue_many_as(
        &self,
        jobs: Vec<NewJob>,
        known: Known,
    ) -> Result<Vec<EnqueueOutcome>, StoreError> {
        Err(unbuilt("enqueue_many_as"))
    }

    pub async fn enqueue_invalid(
        &self,
        jobs: Vec<(NewJob, String)>,
    ) -> Result<Vec<EnqueueOutcome>, StoreError> {
        Err(unbuilt("enqueue_invalid"))
    }

    pub async fn known_versions(
        &self,
        source_root: &Path,
    ) -> Result<HashMap<PathBuf, (u64, i64)>, StoreError> {
        Err(unbuilt("known_versions"))
    }

    pub async fn result_paths(&self) -> Result<HashSet<PathBuf>, StoreError> {
        Err(unbuilt("result_paths"))
    }

    pub async fn result_with_hash(
        &self,
        sha256: &str,
        except: JobId,
    ) -> Result<Option<(JobId, Option<PathBuf>)>, StoreError> {
        Err(unbuilt("result_with_hash"))
    }

    pub async fn note(&self, id: JobId, detail: &str) -> Result<(), StoreError> {
        Err(unbuilt("note"))
    }

    pub async fn note_input(&self, id: JobId, note: &str) -> Result<(), StoreError> {
        Err(unbuilt("note_input"))
    }

    pub async fn input_notes(&self) -> Result<HashMap<JobId, String>, StoreError> {
        Err(unbuilt("input_notes"))
    }

    pub async fn job_notes(&self) -> Result<HashMap<JobId, Vec<String>>, StoreError> {
        Err(unbuilt("job_notes"))
    }
}
