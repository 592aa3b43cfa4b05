//! PLACEHOLDER (schedule): replaced by the PostgreSQL implementation.

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
    pub async fn due_work(
        &self,
        now_ms: i64,
        limits: DueLimits,
        skip: &[JobId],
    ) -> Result<DueWork, StoreError> {
        Err(unbuilt("due_work"))
    }
}
