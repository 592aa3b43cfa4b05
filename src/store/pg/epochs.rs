//! PLACEHOLDER (epochs): replaced by the PostgreSQL implementation.

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
    pub async fn record_credits(&self, credits_left: u64) -> Result<(), StoreError> {
        Err(unbuilt("record_credits"))
    }

    pub async fn latest_credits(&self) -> Result<Option<(i64, u64)>, StoreError> {
        Err(unbuilt("latest_credits"))
    }

    pub async fn open_epoch(&self) -> Result<Option<Epoch>, StoreError> {
        Err(unbuilt("open_epoch"))
    }

    pub async fn epoch(&self, id: EpochId) -> Result<Option<Epoch>, StoreError> {
        Err(unbuilt("epoch"))
    }

    pub async fn uploading_in(&self, epoch: EpochId) -> Result<Vec<JobId>, StoreError> {
        Err(unbuilt("uploading_in"))
    }

    pub async fn roll_epoch(
        &self,
        closing: Option<(EpochId, Closing)>,
        start_credits: u64,
    ) -> Result<EpochId, StoreError> {
        Err(unbuilt("roll_epoch"))
    }

    pub async fn credits_spent_elsewhere(&self) -> Result<u64, StoreError> {
        Err(unbuilt("credits_spent_elsewhere"))
    }

    pub async fn credits_spent(&self) -> Result<u64, StoreError> {
        Err(unbuilt("credits_spent"))
    }

    pub async fn charged_since(&self, since_ms: i64) -> Result<u64, StoreError> {
        Err(unbuilt("charged_since"))
    }

    pub async fn paid_waiting(&self) -> Result<(u64, Option<i64>), StoreError> {
        Err(unbuilt("paid_waiting"))
    }
}
