//! PLACEHOLDER (transitions): replaced by the PostgreSQL implementation.

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
    /// `uploading` → `processing` with the answer (edge `uploaded`), committed now.
    pub async fn uploaded(&self, id: JobId, answer: &Uploaded<'_>) -> Result<(), StoreError> {
        Err(unbuilt("uploaded"))
    }

    pub async fn begin_upload_with(
        &self,
        id: JobId,
        intent: &UploadIntent<'_>,
    ) -> Result<(), StoreError> {
        Err(unbuilt("begin_upload_with"))
    }

    pub async fn adopt_answer(
        &self,
        id: JobId,
        found: State,
        answer: &Uploaded<'_>,
    ) -> Result<(), StoreError> {
        Err(unbuilt("adopt_answer"))
    }

    pub async fn requeue(
        &self,
        id: JobId,
        from: State,
        reason: &str,
        not_before_ms: i64,
    ) -> Result<(), StoreError> {
        Err(unbuilt("requeue"))
    }

    pub async fn fail(&self, id: JobId, from: State, reason: &str) -> Result<(), StoreError> {
        Err(unbuilt("fail"))
    }

    pub async fn skip(&self, id: JobId, reason: &str) -> Result<(), StoreError> {
        Err(unbuilt("skip"))
    }

    pub async fn hold(
        &self,
        id: JobId,
        from: State,
        reason: &str,
        credit_spent: bool,
    ) -> Result<(), StoreError> {
        Err(unbuilt("hold"))
    }

    pub async fn begin_download(&self, id: JobId) -> Result<(), StoreError> {
        Err(unbuilt("begin_download"))
    }

    pub async fn finish(
        &self,
        id: JobId,
        from: State,
        output_path: &Path,
        output_sha256: &str,
    ) -> Result<(), StoreError> {
        Err(unbuilt("finish"))
    }

    pub async fn retry(&self, id: JobId, reupload: bool) -> Result<State, StoreError> {
        Err(unbuilt("retry"))
    }

    pub async fn defer(&self, id: JobId, state: State, at_ms: i64) -> Result<(), StoreError> {
        Err(unbuilt("defer"))
    }

    pub async fn set_next_poll(&self, id: JobId, at_ms: i64) -> Result<(), StoreError> {
        Err(unbuilt("set_next_poll"))
    }
}
