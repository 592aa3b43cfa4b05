//! The hostile answers themselves (see `hostile.rs` for the modes and the table of what each
//! does): the middleware on the faultable routes that rewrites a successful API answer, or
//! serves a broken result, when a mode is set for the request's site, and the tarpit
//! listener behind `url_hang`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::hostile::{Hostile, HostileMode, Site, site_of};
use super::reply::{AbortConnection, ok};
use super::state::Shared;

/// Size of a `result_huge` body.
pub const HUGE_RESULT_BYTES: usize = 2 * 1024 * 1024;
/// Length of a `mdf_huge` mdf.
const HUGE_MDF_CHARS: usize = 10 * 1024;
/// The first bytes of a JPEG (SOI + JFIF APP0), so magic-byte checks pass.
const JPEG_HEAD: &[u8] = b"\xFF\xD8\xFF\xE0\x00\x10JFIF\x00\x01\x01\x00\x00\x01";
/// The `../` name `evil_names` offers.
pub const EVIL_NAME: &str = "../../../escape.jpg";

/// Middleware on the faultable routes: passes everything through unless a hostile mode is set
/// for this request's site.
pub(crate) async fn rewrite(State(st): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let site = site_of(req.uri().path());
    let affects = |h: &Hostile| {
        Some(h.site()) == site || (h.mode == HostileMode::EvilNames && site == Some(Site::Result))
    };
    let Some(h) = st.hostile().filter(affects) else {
        return next.run(req).await;
    };
    if site == Some(Site::Result) {
        return result_answer(&st, h, req, next).await;
    }
    let resp = next.run(req).await;
    if resp.extensions().get::<AbortConnection>().is_some() || resp.status() != StatusCode::OK {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = to_bytes(body, 1 << 20).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let answer: Option<Value> = serde_json::from_slice(&bytes).ok();
    let data = match &answer {
        Some(a) if a["code"] == 200 => a["data"].clone(),
        // Vendor failures pass unchanged: only answers that did the work turn hostile.
        _ => return Response::from_parts(parts, Body::from(bytes)),
    };
    if !st.take_hostile_turn(h.mode) {
        return Response::from_parts(parts, Body::from(bytes));
    }
    api_answer(&st, h.mode, data)
}

fn api_answer(st: &Shared, mode: HostileMode, data: Value) -> Response {
    use HostileMode::*;
    let with = |key: &str, v: Value| {
        let mut d = data.clone();
        d[key] = v;
        ok(d)
    };
    match mode {
        NotJson => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain")],
            "OK: your photo is being enhanced, thank you!",
        )
            .into_response(),
        WrongTypes => ok(swap_types(data)),
        MissingData => axum::Json(json!({"code": 200})).into_response(),
        MdfTraversal => with("mdf", json!("../../etc/passwd")),
        MdfHuge => {
            let text = "hostile mdf text ".repeat(HUGE_MDF_CHARS / 17 + 1);
            with("mdf", json!(&text[..HUGE_MDF_CHARS]))
        }
        UrlFile => with("url", json!("file:///etc/passwd")),
        UrlFtp => with("url", json!("ftp://127.0.0.1/static/result.jpg")),
        UrlHang => {
            let addr = st
                .tarpit()
                .map_or("127.0.0.1:9".to_string(), |a| a.to_string());
            with(
                "url",
                json!(format!("http://{addr}/static/life_img/never01100.jpg")),
            )
        }
        EvilNames => {
            let url = data["url"].as_str().unwrap_or_default().to_string();
            with(
                "url",
                json!(format!("{url}?filename=..%2F..%2F..%2Fescape.jpg")),
            )
        }
        // Result modes never reach here.
        ResultHtml | ResultHuge | ResultTrickle | RedirectLoop => ok(data),
    }
}

/// Every field of an object with its JSON type swapped: strings become numbers, numbers
/// strings; anything else becomes an array.
fn swap_types(data: Value) -> Value {
    match data {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(_) => json!(123),
                        Value::Number(n) => json!(n.to_string()),
                        other => json!([other]),
                    };
                    (k, v)
                })
                .collect(),
        ),
        other => json!([other]),
    }
}

async fn result_answer(st: &Shared, h: Hostile, req: Request, next: Next) -> Response {
    use HostileMode::*;
    let hop: Option<u64> = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("hop="))
            .and_then(|n| n.parse().ok())
    });
    // A redirect chain is one hostile answer; its later hops are counted but not "turns".
    // `evil_names` took its turn at the download endpoint.
    match (h.mode, hop) {
        (EvilNames, _) => {}
        (RedirectLoop, Some(_)) => st.count_fault("hostile:redirect_loop"),
        _ if !st.take_hostile_turn(h.mode) => return next.run(req).await,
        _ => {}
    }
    match h.mode {
        ResultHtml => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html")],
            "<!DOCTYPE html><html><body><h1>Your result is ready!</h1></body></html>",
        )
            .into_response(),
        ResultHuge => {
            let chunk = Bytes::from(vec![0u8; 64 * 1024]);
            let n = HUGE_RESULT_BYTES / chunk.len();
            let head = Bytes::from_static(JPEG_HEAD);
            let rest = std::iter::repeat_n(chunk, n).map(Ok::<_, std::io::Error>);
            let stream = futures_util::stream::iter(std::iter::once(Ok(head)).chain(rest));
            jpeg(Body::from_stream(stream))
        }
        ResultTrickle => {
            let head = futures_util::stream::once(async { Ok(Bytes::from_static(JPEG_HEAD)) });
            let drip = futures_util::stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Some((Ok::<_, std::io::Error>(Bytes::from_static(b"\0")), ()))
            });
            jpeg(Body::from_stream(futures_util::StreamExt::chain(
                head, drip,
            )))
        }
        RedirectLoop => {
            let next_hop = format!("{}?hop={}", req.uri().path(), hop.unwrap_or(0) + 1);
            let mut r = StatusCode::FOUND.into_response();
            if let Ok(v) = HeaderValue::from_str(&next_hop) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        EvilNames => {
            let mut r = next.run(req).await;
            let v = format!("attachment; filename=\"{EVIL_NAME}\"");
            if let Ok(v) = HeaderValue::from_str(&v) {
                r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            r
        }
        _ => next.run(req).await,
    }
}

fn jpeg(body: Body) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    r
}

/// A loopback listener that accepts connections and never answers (`url_hang`). Connections
/// are held until the sim stops.
pub(crate) async fn tarpit(
    stop: CancellationToken,
    tasks: &TaskTracker,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    tasks.spawn(async move {
        let mut held = Vec::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.accept() => match r {
                    Ok((s, _)) => held.push(s),
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                },
            }
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swapped_types() {
        let d = swap_types(json!({"mdf":"ab","status":200,"x":null}));
        assert_eq!(d, json!({"mdf":123,"status":"200","x":[null]}));
    }
}
