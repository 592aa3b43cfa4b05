//! PLACEHOLDER (export): replaced by the PostgreSQL implementation.

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
    pub async fn export_jobs(&self, since_ms: Option<i64>) -> Result<Vec<ExportRow>, StoreError> {
        Err(unbuilt("export_jobs"))
    }

    pub async fn export_events(
        &self,
        since_ms: Option<i64>,
    ) -> Result<Vec<ProvenanceEvent>, StoreError> {
        Err(unbuilt("export_events"))
    }

    pub async fn done_results_in(
        &self,
        output_dir: &Path,
    ) -> Result<Vec<(PathBuf, String)>, StoreError> {
        Err(unbuilt("done_results_in"))
    }

    pub async fn result_dirs(&self) -> Result<Vec<PathBuf>, StoreError> {
        Err(unbuilt("result_dirs"))
    }
}
