//! `POST /api/third/photo/upload`: the one endpoint that costs money. The vendor does not
//! say in which order it checks things; the sim checks token, then third_code, then credits,
//! then parameters (file, repair_type, rgb), then the image (magic bytes, header size, full
//! decode), and only then charges. A failed upload is never charged, except by the
//! `charge_drop` fault, whose whole point is a charge without an answer.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use image::DynamicImage;
use serde_json::json;

use super::faults::Plan;
use super::form::{Form, FormError, Upload, read_form};
use super::reply::{
    BAD_PARAMS, Errno, IMAGE_BAD, NO_CREDITS, TOKEN, UNSUPPORTED, UPLOAD_FAILED, abort_response, ok,
};
use super::state::{Job, Phase, Shared};
use super::transform::{self, Format};
use crate::repair::{Repair, Rgb};

/// The vendor's size limit, per side.
const MAX_SIDE: u32 = 6000;

/// An upload that passed every check, ready to be charged.
struct Valid {
    file: Upload,
    repair: Repair,
    rgb: Option<Rgb>,
    format: Format,
    /// The decoded picture; `None` in passthrough mode (the bytes are the result).
    image: Option<DynamicImage>,
}

pub(crate) async fn upload(
    State(st): State<Arc<Shared>>,
    headers: HeaderMap,
    req: Request,
) -> Response {
    let plan = req.extensions().get::<Plan>().copied().unwrap_or_default();
    let stall = st.note_upload_request();
    // The whole body is read (the file streamed to disk) before answering even a bad
    // token, so the client always gets its answer instead of a broken pipe.
    let form = read_form(req, Some(st.next_upload_path())).await;
    let token = headers.get("token").and_then(|v| v.to_str().ok());
    if !st.token_ok(token) {
        return TOKEN.into_response();
    }
    let form = match form {
        Ok(f) => f,
        Err(e @ FormError::Store { .. }) => {
            tracing::error!("sim: {e}");
            return UPLOAD_FAILED.into_response();
        }
        Err(e) => {
            tracing::info!("sim: upload rejected: {e}");
            return BAD_PARAMS.into_response();
        }
    };
    if form.get("third_code") != Some(st.third_code.as_str()) {
        return TOKEN.into_response();
    }
    if st.credits() == 0 {
        return NO_CREDITS.into_response();
    }
    let valid = match validate(&st, form).await {
        Ok(v) => v,
        Err(errno) => return errno.into_response(),
    };
    if plan.e9006 {
        st.count_fault("e9006");
        return UPLOAD_FAILED.into_response();
    }
    if plan.e9009 {
        st.count_fault("e9009");
        return IMAGE_BAD.into_response();
    }
    let size = valid.file.size;
    if let Some(s) = stall.filter(|s| !s.after_charge) {
        tokio::time::sleep(s.delay).await;
    }
    let Some((mdf, format)) = accept(&st, valid).await else {
        return NO_CREDITS.into_response();
    };
    if let Some(s) = stall.filter(|s| s.after_charge) {
        tokio::time::sleep(s.delay).await;
    }
    tracing::info!("sim: charged upload {mdf} ({size} bytes)");
    if plan.charge_drop {
        st.count_fault("charge_drop");
        return abort_response();
    }
    let img_url = format!("{}/static/img/{mdf}_in.{}", st.base_url, format.ext());
    ok(json!({ "img_url": img_url, "mdf": mdf }))
}

async fn validate(st: &Shared, form: Form) -> Result<Valid, Errno> {
    let repair = form
        .get("repair_type")
        .and_then(Repair::from_wire)
        .ok_or(BAD_PARAMS)?;
    let rgb = match repair.needs_rgb() {
        true => Some(
            form.get("rgb")
                .ok_or(BAD_PARAMS)?
                .parse::<Rgb>()
                .map_err(|_| BAD_PARAMS)?,
        ),
        false => None,
    };
    let file = form.file.ok_or(BAD_PARAMS)?;
    let format = transform::sniff(&file.head).ok_or(UNSUPPORTED)?;
    let path = file.path().to_path_buf();
    let passthrough = st.passthrough;
    let image = tokio::task::spawn_blocking(move || -> Result<Option<DynamicImage>, Errno> {
        match transform::header_dimensions(&path, format) {
            Ok(Some((w, h))) if w > MAX_SIDE || h > MAX_SIDE => return Err(IMAGE_BAD),
            Ok(Some(_)) => {}
            // Benchmarks may upload padded or synthetic bytes: passthrough never decodes.
            Ok(None) | Err(_) if passthrough => {}
            Ok(None) | Err(_) => return Err(IMAGE_BAD),
        }
        if passthrough {
            return Ok(None);
        }
        transform::decode(&path, format)
            .map(Some)
            .map_err(|_| IMAGE_BAD)
    })
    .await
    .map_err(|_| UPLOAD_FAILED)??;
    Ok(Valid {
        file,
        repair,
        rgb,
        format,
        image,
    })
}

/// Charges, moves the upload into place and starts the background transform.
/// `None` when the last credit went to a concurrent upload.
async fn accept(st: &Arc<Shared>, v: Valid) -> Option<(String, Format)> {
    let ext = v.format.ext();
    let dir = st.files_dir.clone();
    let ready_at = Instant::now() + st.processing_time();
    let passthrough = v.image.is_none();
    let rgb = v.rgb.map(|c| c.to_string());
    let mdf = st.charge(&v.file.sha256, v.repair.wire(), rgb, |mdf| {
        let upload = dir.join(format!("{mdf}_in.{ext}"));
        let result = match passthrough {
            true => upload.clone(),
            false => dir.join(format!("{mdf}01100.{ext}")),
        };
        Job {
            format: v.format,
            upload,
            result,
            ready_at,
            phase: Phase::Processing,
        }
    })?;
    let job = st.job(&mdf)?;
    let incoming = v.file.keep();
    if let Err(e) = tokio::fs::rename(&incoming, &job.upload).await {
        tracing::error!(
            "sim: could not move upload {} into place: {e}",
            incoming.display()
        );
        st.finish(&mdf, false);
        return Some((mdf, v.format));
    }
    match v.image {
        None => st.finish(&mdf, true),
        Some(img) => {
            let (st, mdf, repair, rgb, format) =
                (st.clone(), mdf.clone(), v.repair, v.rgb, v.format);
            tokio::spawn(async move {
                let out = job.result.clone();
                let done = tokio::task::spawn_blocking(move || {
                    transform::encode(&transform::apply(img, repair, rgb), format, &out)
                })
                .await;
                let ok = matches!(done, Ok(Ok(())));
                if !ok {
                    tracing::error!("sim: transform of {mdf} failed: {done:?}");
                }
                st.finish(&mdf, ok);
            });
        }
    }
    Some((mdf, v.format))
}
