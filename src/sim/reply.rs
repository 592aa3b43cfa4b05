//! How the simulator answers, shared by every handler and middleware so they need not import
//! each other: the vendor's failure answers (errno and message, HTTP 200 with `code` 9000),
//! its success envelope, and the marker that makes the connection server reset a connection
//! instead of answering.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A vendor failure answer: HTTP 200 with `code` 9000 (the vendor never uses HTTP errors).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Errno(pub u32, pub &'static str);

pub(crate) const TOKEN: Errno = Errno(9999, "请求参数token不合法");
pub(crate) const NO_CREDITS: Errno = Errno(9101, "剩余下载次数为0");
pub(crate) const BAD_PARAMS: Errno = Errno(9001, "传入参数错误");
pub(crate) const UNSUPPORTED: Errno = Errno(9005, "文件上传类型不支持");
pub(crate) const UPLOAD_FAILED: Errno = Errno(9006, "上传失败");
pub(crate) const IMAGE_BAD: Errno = Errno(9009, "图片异常,处理失败");
pub(crate) const NO_IMAGE: Errno = Errno(9002, "图片不存在,请确认图片是否上传成功");
pub(crate) const EXPIRED: Errno = Errno(9002, "数据已失效,请重新上传");
pub(crate) const NOT_FOUND: Errno = Errno(9002, "数据未找到");
pub(crate) const STILL_PROCESSING: Errno = Errno(500, "图片处理中,请稍后再试");

impl IntoResponse for Errno {
    fn into_response(self) -> Response {
        Json(json!({"code": 9000, "errno": self.0, "msg": self.1})).into_response()
    }
}

/// A vendor success answer: `code` 200 with `data`.
pub(crate) fn ok(data: Value) -> Response {
    Json(json!({"code": 200, "data": data})).into_response()
}

/// Marks a response that must never be written: the connection server sees it and resets
/// the TCP connection instead (see `conn.rs`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct AbortConnection;

/// An answer the connection server replaces with a TCP reset.
pub(crate) fn abort_response() -> Response {
    let mut r = StatusCode::INTERNAL_SERVER_ERROR.into_response();
    r.extensions_mut().insert(AbortConnection);
    r
}
