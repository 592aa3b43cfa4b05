//! The sim's HTTP surface: the four vendor endpoints, the result files, the `/__sim` admin
//! endpoints, and the layers every answer goes through (a `Date` header from the sim's
//! clock, one info log line per request). The upload handler lives in `upload.rs`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio_util::io::ReaderStream;

use super::faults;
use super::form::read_form;
use super::hostile::Hostile;
use super::hostile_answer;
use super::reply::{
    AbortConnection, BAD_PARAMS, EXPIRED, Errno, NO_IMAGE, NOT_FOUND, STILL_PROCESSING, TOKEN, ok,
};
use super::state::{Phase, Shared};
use super::{Faults, upload};

pub(crate) fn router(st: Arc<Shared>) -> Router {
    let faulted = Router::new()
        .route(
            "/api/third/photo/upload",
            post(upload::upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/third/photo/status", post(status))
        .route("/api/third/photo/download", post(download))
        .route("/api/third/company/nums", post(nums))
        .route("/static/life_img/{name}", get(result_file))
        .route("/static/img/{name}", get(upload_file))
        .route_layer(middleware::from_fn_with_state(
            st.clone(),
            hostile_answer::rewrite,
        ))
        .route_layer(middleware::from_fn_with_state(st.clone(), faults::inject));
    Router::new()
        .route("/__sim/ledger", get(ledger))
        .route("/__sim/credits", post(credits))
        .route("/__sim/faults", post(set_faults).get(get_faults))
        .route("/__sim/hostile", post(set_hostile).get(get_hostile))
        .merge(faulted)
        .layer(middleware::from_fn_with_state(st.clone(), date_and_log))
        .with_state(st)
}

async fn date_and_log(State(st): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let (method, path, t0) = (
        req.method().clone(),
        req.uri().path().to_string(),
        Instant::now(),
    );
    if let Some(endpoint) = api_endpoint(&path) {
        st.note_api_call(endpoint);
    }
    let mut resp = next.run(req).await;
    let what = match resp.extensions().get::<AbortConnection>() {
        Some(_) => "connection reset".to_string(),
        None => resp.status().to_string(),
    };
    tracing::info!("sim: {method} {path} -> {what} in {:?}", t0.elapsed());
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(st.now())) {
        resp.headers_mut().insert(header::DATE, v);
    }
    resp
}

/// The endpoint an API path names (`/api/third/photo/upload` → `upload`); `None` for result
/// files and the simulator's own `/__sim` routes, which are no API calls.
fn api_endpoint(path: &str) -> Option<&str> {
    path.strip_prefix("/api/third/")
        .and_then(|rest| rest.rsplit('/').next())
}

fn token_of(headers: &HeaderMap) -> Option<&str> {
    headers.get("token").and_then(|v| v.to_str().ok())
}

/// Reads a file-less form and checks token and third_code; `Err` is the answer to send.
async fn checked_form(
    st: &Shared,
    headers: &HeaderMap,
    req: Request,
    unknown_code: Errno,
) -> Result<super::form::Form, Response> {
    let form = read_form(req, None).await;
    if !st.token_ok(token_of(headers)) {
        return Err(TOKEN.into_response());
    }
    let form = form.map_err(|_| BAD_PARAMS.into_response())?;
    if form.get("third_code") != Some(st.third_code.as_str()) {
        return Err(unknown_code.into_response());
    }
    Ok(form)
}

async fn status(State(st): State<Arc<Shared>>, headers: HeaderMap, req: Request) -> Response {
    let form = match checked_form(&st, &headers, req, TOKEN).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    expire(&st).await;
    match form.get("mdf").and_then(|m| st.job(m)) {
        Some(job) if job.is_ready(Instant::now()) => {
            ok(json!({"msg": "图片处理完成", "status": 200}))
        }
        Some(job) if matches!(job.phase, Phase::Processing | Phase::Done { .. }) => {
            ok(json!({"msg": "图片处理中", "status": 100}))
        }
        _ => NO_IMAGE.into_response(),
    }
}

async fn download(State(st): State<Arc<Shared>>, headers: HeaderMap, req: Request) -> Response {
    let form = match checked_form(&st, &headers, req, TOKEN).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    expire(&st).await;
    let Some(mdf) = form.get("mdf") else {
        return NO_IMAGE.into_response();
    };
    match st.job(mdf) {
        Some(job) if job.is_ready(Instant::now()) => {
            let url = format!(
                "{}/static/life_img/{mdf}01100.{}",
                st.base_url,
                job.format.ext()
            );
            ok(json!({ "url": url }))
        }
        Some(job) if job.phase == Phase::Expired => EXPIRED.into_response(),
        Some(job) if job.phase == Phase::Failed => NO_IMAGE.into_response(),
        Some(_) => STILL_PROCESSING.into_response(),
        None => NO_IMAGE.into_response(),
    }
}

async fn nums(State(st): State<Arc<Shared>>, headers: HeaderMap, req: Request) -> Response {
    match checked_form(&st, &headers, req, NOT_FOUND).await {
        Ok(_) => ok(json!({"code": st.third_code, "nums": st.credits()})),
        Err(r) => r,
    }
}

/// Deletes the files of every job past its retention.
pub(crate) async fn expire(st: &Shared) {
    for path in st.expire_due() {
        if let Err(e) = tokio::fs::remove_file(&path).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("sim: could not delete expired {}: {e}", path.display());
        }
    }
}

/// `GET /static/life_img/<mdf>01100.<ext>`: the result, while it is ready and not expired.
async fn result_file(State(st): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    expire(&st).await;
    let Some((stem, ext)) = name.rsplit_once('.') else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match stem.strip_suffix("01100").and_then(|mdf| st.job(mdf)) {
        Some(job) if job.format.ext() == ext && job.is_ready(Instant::now()) => {
            send_file(&job.result, job.format.content_type()).await
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `GET /static/img/<mdf>_in.<ext>`: the uploaded image (`img_url`), until expiry.
async fn upload_file(State(st): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    expire(&st).await;
    let Some((stem, ext)) = name.rsplit_once('.') else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match stem.strip_suffix("_in").and_then(|mdf| st.job(mdf)) {
        Some(job) if job.format.ext() == ext && job.phase != Phase::Expired => {
            send_file(&job.upload, job.format.content_type()).await
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Streams a file from disk (never loaded whole).
async fn send_file(path: &std::path::Path, content_type: &'static str) -> Response {
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(_) => return StatusCode::NOT_FOUND.into_response(),
    };
    let len = file.metadata().await.map(|m| m.len()).ok();
    let mut resp = Body::from_stream(ReaderStream::new(file)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(len) = len {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    resp
}

async fn ledger(State(st): State<Arc<Shared>>) -> Response {
    Json(st.ledger()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreditsChange {
    add: Option<u64>,
    set: Option<u64>,
}

async fn credits(State(st): State<Arc<Shared>>, Json(c): Json<CreditsChange>) -> Response {
    let left = match (c.add, c.set) {
        (Some(n), None) => st.add_credits(n),
        (None, Some(n)) => st.set_credits(n),
        _ => {
            let msg = "send exactly one of {\"add\":N} or {\"set\":N}";
            return (StatusCode::BAD_REQUEST, msg).into_response();
        }
    };
    Json(json!({ "credits_left": left })).into_response()
}

async fn set_faults(State(st): State<Arc<Shared>>, Json(f): Json<Faults>) -> Response {
    if let Err(e) = f.validate() {
        return (StatusCode::BAD_REQUEST, e).into_response();
    }
    st.set_faults(f);
    Json(f).into_response()
}

async fn get_faults(State(st): State<Arc<Shared>>) -> Response {
    Json(st.faults()).into_response()
}

/// `POST /__sim/hostile` with a [`Hostile`] as JSON, or `null` for an honest server again.
async fn set_hostile(State(st): State<Arc<Shared>>, Json(h): Json<Option<Hostile>>) -> Response {
    if let Some(Err(e)) = h.as_ref().map(Hostile::validate) {
        return (StatusCode::BAD_REQUEST, e).into_response();
    }
    st.set_hostile(h);
    Json(h).into_response()
}

async fn get_hostile(State(st): State<Arc<Shared>>) -> Response {
    Json(st.hostile()).into_response()
}
