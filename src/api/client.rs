//! The vendor's four endpoints as methods of [`ApiClient`]: upload a photo (the one call that
//! costs a credit), ask a job's status, get a result's download URL, and count the credits
//! left. This file owns each endpoint's form fields and the shape of its success `data`;
//! `docs/hili-api.md` describes them and how hili reads each ambiguity. How a request is
//! sent and its answer read is in `transport`, the envelope and its checks in `envelope`, the
//! streamed and hashed photo body in `upload_body`.

use std::path::Path;

use reqwest::multipart::Form;
use serde::Deserialize;
use serde_json::Value;

use crate::api::envelope::{bad_body, preview};
use crate::api::error::{ApiError, Endpoint};
use crate::api::transport::Request;
use crate::api::upload_body::photo_part;
use crate::repair::{Repair, Rgb};

// Callers name the whole client through this module.
pub use crate::api::envelope::{check_mdf, check_url};
pub use crate::api::error::error_chain;
pub use crate::api::transport::{ApiClient, ClientOptions};

/// A successful upload: the job's server-side id and what was actually sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub mdf: String,
    pub img_url: String,
    /// Hex SHA-256 of the bytes streamed to the server.
    pub sent_sha256: String,
    pub sent_bytes: u64,
}

/// Where the vendor is with a job (its `status` 100 or 200).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Still being processed (100).
    Processing,
    /// Finished: the result can be downloaded (200).
    Done,
}

impl ApiClient {
    /// Uploads a photo. Costs one credit when it succeeds. The file is streamed from disk.
    pub async fn upload(
        &self,
        path: &Path,
        repair: Repair,
        rgb: Option<Rgb>,
    ) -> Result<Uploaded, ApiError> {
        #[derive(Deserialize)]
        struct Data {
            // Only recorded, never fetched: a broken one must not cost the paid result.
            #[serde(default)]
            img_url: Option<Value>,
            mdf: String,
        }
        let (data, tally): (Data, _) = self
            .call(Endpoint::Upload, || self.upload_form(path, repair, rgb))
            .await?;
        check_mdf(&data.mdf).map_err(|d| bad_body(Endpoint::Upload, &d))?;
        let img_url = match data.img_url {
            Some(Value::String(u)) if check_url(&u).is_ok() => u,
            other => {
                tracing::warn!(mdf = %data.mdf, "upload answer has no usable img_url ({}); not needed, ignored", preview(&other.map(|v| v.to_string()).unwrap_or_default()));
                String::new()
            }
        };
        let (sent_sha256, sent_bytes) = match tally {
            Some(t) => t.finish(),
            None => (String::new(), 0),
        };
        Ok(Uploaded {
            mdf: data.mdf,
            img_url,
            sent_sha256,
            sent_bytes,
        })
    }

    pub async fn status(&self, mdf: &str) -> Result<JobStatus, ApiError> {
        #[derive(Deserialize)]
        struct Data {
            status: i64,
        }
        let (data, _): (Data, _) = self.call(Endpoint::Status, || self.mdf_form(mdf)).await?;
        match data.status {
            100 => Ok(JobStatus::Processing),
            200 => Ok(JobStatus::Done),
            other => Err(bad_body(
                Endpoint::Status,
                &format!("unknown status {other} (expected 100 or 200)"),
            )),
        }
    }

    /// The URL of a finished result, to fetch with [`ApiClient::http`].
    pub async fn download_url(&self, mdf: &str) -> Result<String, ApiError> {
        #[derive(Deserialize)]
        struct Data {
            url: String,
        }
        let (data, _): (Data, _) = self.call(Endpoint::Download, || self.mdf_form(mdf)).await?;
        check_url(&data.url).map_err(|d| bad_body(Endpoint::Download, &d))?;
        Ok(data.url)
    }

    /// Uploads left on the account.
    pub async fn credits(&self) -> Result<u64, ApiError> {
        #[derive(Deserialize)]
        struct Data {
            nums: u64,
        }
        let third_code = self.third_code().to_string();
        let (data, _): (Data, _) = self
            .call(Endpoint::Nums, || {
                let form = Form::new().text("third_code", third_code.clone());
                async move { Ok((form, None)) }
            })
            .await?;
        Ok(data.nums)
    }

    async fn mdf_form(&self, mdf: &str) -> Result<Request, ApiError> {
        let form = Form::new()
            .text("third_code", self.third_code().to_string())
            .text("mdf", mdf.to_string());
        Ok((form, None))
    }

    async fn upload_form(
        &self,
        path: &Path,
        repair: Repair,
        rgb: Option<Rgb>,
    ) -> Result<Request, ApiError> {
        let (part, tally) = photo_part(path).await?;
        let mut form = Form::new()
            .text("repair_type", repair.wire())
            .text("third_code", self.third_code().to_string())
            .part("file", part);
        if let (true, Some(rgb)) = (repair.needs_rgb(), rgb) {
            form = form.text("rgb", rgb.to_string());
        }
        Ok((form, Some(tally)))
    }
}
