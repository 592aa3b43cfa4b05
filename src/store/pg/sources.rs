//! PLACEHOLDER (sources): replaced by the PostgreSQL implementation.

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
    pub async fn undisposed(
        &self,
        roots: &[PathBuf],
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        Err(unbuilt("undisposed"))
    }

    pub async fn later_job_at(&self, id: JobId, path: &Path) -> Result<Option<JobId>, StoreError> {
        Err(unbuilt("later_job_at"))
    }

    pub async fn mark_disposed(&self, id: JobId, note: Option<&str>) -> Result<(), StoreError> {
        Err(unbuilt("mark_disposed"))
    }

    pub async fn record_move(&self, id: JobId, plan: &MovePlan) -> Result<(), StoreError> {
        Err(unbuilt("record_move"))
    }

    pub async fn pending_move(&self, id: JobId) -> Result<Option<MovePlan>, StoreError> {
        Err(unbuilt("pending_move"))
    }

    pub async fn pending_moves(&self) -> Result<Vec<(JobId, MovePlan)>, StoreError> {
        Err(unbuilt("pending_moves"))
    }

    pub async fn clear_move(&self, id: JobId) -> Result<(), StoreError> {
        Err(unbuilt("clear_move"))
    }

    pub async fn finish_move(&self, id: JobId, note: Option<&str>) -> Result<(), StoreError> {
        Err(unbuilt("finish_move"))
    }
}
