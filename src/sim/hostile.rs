//! Test-only "hostile answers", what they are: a server that is broken or malicious rather than merely
//! flaky. One mode at a time (set with [`super::SimHandle::set_hostile`] or
//! `POST /__sim/hostile`, cleared with `null`), optionally for only the first `times` answers
//! it affects. Each mode has one site:
//!
//! | mode | site | what the client gets |
//! |---|---|---|
//! | `not_json` | `on` (default upload) | HTTP 200 `text/plain` instead of the JSON |
//! | `wrong_types` | `on` | `data` with every field's type swapped (`"mdf":123`, `"status":"200"`) |
//! | `missing_data` | `on` | `{"code":200}` without `data` |
//! | `mdf_traversal` | upload | `"mdf":"../../etc/passwd"` |
//! | `mdf_huge` | upload | an `mdf` of 10 kB of text |
//! | `url_file`, `url_ftp` | download | `file:///etc/passwd`, `ftp://127.0.0.1/…` |
//! | `url_hang` | download | a loopback port that accepts and never answers |
//! | `evil_names` | download + result GET | `../` in the URL's query and in `Content-Disposition` (a good image) |
//! | `result_html` | result GET | HTTP 200 HTML page |
//! | `result_huge` | result GET | 2 MiB starting like a JPEG, streamed without a length |
//! | `result_trickle` | result GET | a JPEG header, then one byte every 100 ms, forever |
//! | `redirect_loop` | result GET | 302 to itself, endlessly (`?hop=N`) |
//!
//! API modes rewrite only successful (`code` 200) answers and only after the work is done, so
//! a garbled upload answer has really been charged — the ambiguous case the client must
//! reconcile. Every hostile answer is counted in the ledger as fault `hostile:<mode>`.

//!
//! This file holds the modes and where each strikes (a leaf: the sim's state stores the mode
//! set); `hostile_answer.rs` is the middleware that gives the answers.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostileMode {
    NotJson,
    WrongTypes,
    MissingData,
    MdfTraversal,
    MdfHuge,
    UrlFile,
    UrlFtp,
    UrlHang,
    EvilNames,
    ResultHtml,
    ResultHuge,
    ResultTrickle,
    RedirectLoop,
}

impl HostileMode {
    pub(crate) fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// The fixed site of every mode but the three generic API ones.
    pub(super) fn fixed_site(self) -> Option<Site> {
        use HostileMode::*;
        match self {
            NotJson | WrongTypes | MissingData => None,
            MdfTraversal | MdfHuge => Some(Site::Api(ApiSite::Upload)),
            UrlFile | UrlFtp | UrlHang | EvilNames => Some(Site::Api(ApiSite::Download)),
            ResultHtml | ResultHuge | ResultTrickle | RedirectLoop => Some(Site::Result),
        }
    }
}

/// The API endpoint a generic mode (`not_json`, `wrong_types`, `missing_data`) affects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiSite {
    #[default]
    Upload,
    Status,
    Download,
    Nums,
}

/// One hostile behaviour. JSON: `{"mode":"not_json","on":"status","times":2}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hostile {
    pub mode: HostileMode,
    /// For `not_json`, `wrong_types`, `missing_data`: which endpoint (default upload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<ApiSite>,
    /// Only this many affected answers are hostile, then the sim behaves again (`None`: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
}

impl Hostile {
    /// A mode for every affected answer, at its default site.
    pub fn new(mode: HostileMode) -> Hostile {
        Hostile {
            mode,
            on: None,
            times: None,
        }
    }

    pub fn on(self, site: ApiSite) -> Hostile {
        Hostile {
            on: Some(site),
            ..self
        }
    }

    pub fn times(self, n: u32) -> Hostile {
        Hostile {
            times: Some(n),
            ..self
        }
    }

    /// `on` is only for the generic modes.
    pub fn validate(&self) -> Result<(), String> {
        if self.on.is_some() && self.mode.fixed_site().is_some() {
            return Err(format!(
                "hostile mode {} has a fixed endpoint: leave out \"on\"",
                self.mode.name()
            ));
        }
        Ok(())
    }

    pub(super) fn site(&self) -> Site {
        self.mode
            .fixed_site()
            .unwrap_or(Site::Api(self.on.unwrap_or_default()))
    }
}

/// Where a hostile mode strikes: one API endpoint, or the result download.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Site {
    Api(ApiSite),
    Result,
}

/// The site a request path belongs to, if any.
pub(super) fn site_of(path: &str) -> Option<Site> {
    Some(match path {
        "/api/third/photo/upload" => Site::Api(ApiSite::Upload),
        "/api/third/photo/status" => Site::Api(ApiSite::Status),
        "/api/third/photo/download" => Site::Api(ApiSite::Download),
        "/api/third/company/nums" => Site::Api(ApiSite::Nums),
        p if p.starts_with("/static/life_img/") => Site::Result,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_and_validation() {
        let h: Hostile =
            serde_json::from_str(r#"{"mode":"not_json","on":"status","times":2}"#).unwrap();
        assert_eq!(
            h,
            Hostile::new(HostileMode::NotJson)
                .on(ApiSite::Status)
                .times(2)
        );
        assert_eq!(h.site(), Site::Api(ApiSite::Status));
        assert!(h.validate().is_ok());
        let h: Hostile = serde_json::from_str(r#"{"mode":"redirect_loop"}"#).unwrap();
        assert_eq!(h.site(), Site::Result);
        assert!(h.on(ApiSite::Upload).validate().is_err());
        assert!(serde_json::from_str::<Hostile>(r#"{"mode":"nope"}"#).is_err());
        assert!(serde_json::from_str::<Hostile>(r#"{"mode":"url_ftp","x":1}"#).is_err());
        assert_eq!(HostileMode::MdfHuge.name(), "mdf_huge");
    }
}
