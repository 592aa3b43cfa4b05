//! The vendor's answer envelope and what hili accepts inside it. Every answer is
//! `{"code":200,"data":..}` or `{"code":9000,"errno":..,"msg":..}` (see `docs/hili-api.md`);
//! this module reads it (bounded in size), turns an errno into its [`ApiError`], and checks
//! the server-supplied values that hili stores or follows (`mdf`, result URLs), so that a
//! broken or hostile answer becomes [`ApiError::BadBody`] rather than a path, a log line or a
//! request somewhere else.

use serde::Deserialize;
use serde_json::Value;

use crate::api::error::{ApiError, Endpoint};

/// Answers larger than this are not the API's JSON.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Longest `mdf` accepted; the vendor's are 32 hex digits.
const MAX_MDF_CHARS: usize = 128;

/// An `mdf` is echoed back in forms and logs and stored: it must be a plain token
/// (1-128 of `A-Z a-z 0-9 _ -`), never text, a path or markup.
pub fn check_mdf(mdf: &str) -> Result<(), String> {
    let ok = (1..=MAX_MDF_CHARS).contains(&mdf.len())
        && mdf
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "mdf {} ({} bytes) is not a plain token of 1-{MAX_MDF_CHARS} letters, digits, '_' or '-'",
            preview(mdf),
            mdf.len()
        ))
    }
}

/// A result URL must parse as an absolute http(s) URL with a host.
pub fn check_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(u) => Err(format!(
            "url {} is not http(s) with a host (scheme {:?})",
            preview(url),
            preview(u.scheme())
        )),
        Err(e) => Err(format!("url {} does not parse: {e}", preview(url))),
    }
}

/// A server-supplied string, quoted and cut short, safe to put in one log line.
pub(crate) fn preview(s: &str) -> String {
    let head: String = s.chars().take(40).collect();
    let more = if head.len() < s.len() { "…" } else { "" };
    format!("{head:?}{more}")
}

pub(crate) fn bad_body(endpoint: Endpoint, detail: &str) -> ApiError {
    ApiError::BadBody {
        endpoint,
        detail: detail.to_string(),
    }
}

/// Decodes `{"code":200,"data":..}` into `data`, `{"code":9000,"errno":..}` into its error.
pub(crate) fn parse_envelope(endpoint: Endpoint, body: &[u8]) -> Result<Value, ApiError> {
    #[derive(Deserialize)]
    struct Envelope {
        code: i64,
        data: Option<Value>,
        errno: Option<Value>,
        msg: Option<Value>,
    }
    let env: Envelope = serde_json::from_slice(body)
        .map_err(|e| bad_body(endpoint, &format!("{e}; body starts {:?}", snippet(body))))?;
    match env.code {
        200 => env
            .data
            .filter(|d| !d.is_null())
            .ok_or_else(|| bad_body(endpoint, "code 200 without data")),
        9000 => {
            // Lenient on the errno's JSON type: "9005" and 9005 mean the same.
            let errno = match &env.errno {
                Some(Value::Number(n)) => n.as_i64(),
                Some(Value::String(s)) => s.trim().parse().ok(),
                _ => None,
            }
            .ok_or_else(|| bad_body(endpoint, "code 9000 without a numeric errno"))?;
            let msg = match env.msg {
                Some(Value::String(s)) => s,
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            Err(ApiError::from_errno(endpoint, errno, msg))
        }
        other => Err(bad_body(endpoint, &format!("unexpected code {other}"))),
    }
}

/// Why an answer's body could not be read.
pub(crate) enum ReadError {
    /// Longer than [`MAX_ANSWER_BYTES`].
    TooLarge,
    /// The connection failed while reading.
    Http(reqwest::Error),
}

/// Reads an answer's body, refusing one larger than any JSON the API sends.
pub(crate) async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, ReadError> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Http)? {
        if buf.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(ReadError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// The start of a body, printable on one line, for error messages.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(400)]);
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    flat.chars().take(160).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_parsing() {
        let ep = Endpoint::Status;
        let ok = parse_envelope(ep, br#"{"code":200,"data":{"status":100,"msg":"x"}}"#);
        assert_eq!(ok.unwrap()["status"], 100);
        for (body, errno) in [
            (r#"{"code":9000,"errno":9005,"msg":"no"}"#, 9005),
            (r#"{"code":9000,"errno":"9002"}"#, 9002),
        ] {
            match parse_envelope(ep, body.as_bytes()) {
                Err(e) => assert_eq!(
                    std::mem::discriminant(&e),
                    std::mem::discriminant(&ApiError::from_errno(ep, errno, String::new()))
                ),
                Ok(v) => panic!("{v}"),
            }
        }
        for bad in [
            "<html>oops</html>",
            r#"{"code":200}"#,
            r#"{"code":9000,"msg":"no errno"}"#,
            r#"{"code":"200","data":{}}"#,
            r#"{"code":302,"data":{}}"#,
        ] {
            assert!(
                matches!(
                    parse_envelope(ep, bad.as_bytes()),
                    Err(ApiError::BadBody { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn mdf_and_url_validation() {
        for good in [
            "40b37f58db153e5149f008421797714e",
            "a",
            "A_b-9",
            &"x".repeat(128),
        ] {
            assert!(check_mdf(good).is_ok(), "{good}");
        }
        let huge = "hostile text ".repeat(800);
        for bad in [
            "",
            "../../etc/passwd",
            "a b",
            "a/b",
            "é",
            "a\n",
            &"x".repeat(129),
            &huge,
        ] {
            let e = check_mdf(bad).unwrap_err();
            assert!(e.len() < 200, "error stays short: {e}");
        }
        assert!(check_url("https://photo.example.com/static/life_img/x01100.jpg").is_ok());
        assert!(check_url("http://127.0.0.1:8080/a.jpg").is_ok());
        for bad in [
            "file:///etc/passwd",
            "ftp://127.0.0.1/x.jpg",
            "http//x",
            "/static/x.jpg",
            "https://",
            "data:image/jpeg;base64,AAAA",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}
