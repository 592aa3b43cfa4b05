//! `hili doctor`: checks, one line each with ✔ or ✘ and a fix, everything a run needs: the
//! config, the secret (its source, never its value), the endpoint, the third_code, the clock
//! against the server's, the credits left and a writable state directory. A check that cannot
//! run after an earlier failure prints a skip line instead. An empty third_code fails before
//! any request, and a run against the vendor's own host says so first (so nobody tests
//! against the paid service by accident).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::api::client::{ApiClient, ClientOptions};
use crate::api::clock::CORRECT_ABOVE_SECS;
use crate::api::error::ApiError;
use crate::config::{Config, Env, SecretSource};
use crate::secret::Secret;

use super::Exit;

/// Runs every check, writing one line per check to `out` (or, with `json`, one JSON object
/// listing them). Exit 2 ([`Exit::Config`]) when a failure is the configuration's (what `hili
/// run` would refuse at once), 1 for any other failure.
pub async fn run(config_path: Option<&Path>, out: &mut dyn Write, json: bool) -> Exit {
    let env = Env::from_process();
    let (all_ok, config_problem) = if json {
        let mut lines = Vec::new();
        let outcome = report_to(config_path, &env, &mut lines).await;
        let _ = writeln!(
            out,
            "{}",
            as_json(&String::from_utf8_lossy(&lines), outcome.0)
        );
        outcome
    } else {
        report_to(config_path, &env, out).await
    };
    match (all_ok, config_problem) {
        (true, _) => Exit::Ok,
        (false, true) => Exit::Config,
        (false, false) => Exit::Error,
    }
}

/// Runs the checks into `out`: whether all passed, and whether a failure is the configuration's.
async fn report_to(config_path: Option<&Path>, env: &Env, out: &mut dyn Write) -> (bool, bool) {
    let mut r = Report {
        out,
        all_ok: true,
        config_problem: false,
    };
    run_in(config_path, env, &mut r).await;
    (r.all_ok, r.config_problem)
}

/// The report's lines (`✔ what: detail`, `✘ …`, `- what: skipped (why)`) as
/// `{"ok": bool, "checks": [{"check", "outcome": "ok"|"failed"|"skipped", "detail"}]}`.
fn as_json(text: &str, ok: bool) -> serde_json::Value {
    let checks: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|line| {
            let (mark, rest) = line.split_once(' ')?;
            let outcome = match mark {
                "✔" => "ok",
                "✘" => "failed",
                "-" => "skipped",
                _ => return None,
            };
            let (check, detail) = rest.split_once(": ").unwrap_or((rest, ""));
            Some(serde_json::json!({"check": check, "outcome": outcome, "detail": detail}))
        })
        .collect();
    serde_json::json!({ "ok": ok, "checks": checks })
}

struct Report<'a> {
    out: &'a mut dyn Write,
    all_ok: bool,
    /// A failure only the configuration can fix (no config, no secret, no third_code).
    config_problem: bool,
}

impl Report<'_> {
    fn ok(&mut self, what: &str, detail: &str) {
        let _ = writeln!(self.out, "✔ {what}: {detail}");
    }
    fn fail(&mut self, what: &str, detail: &str) {
        self.all_ok = false;
        let _ = writeln!(self.out, "✘ {what}: {detail}");
    }
    fn fail_config(&mut self, what: &str, detail: &str) {
        self.config_problem = true;
        self.fail(what, detail);
    }
    fn skip(&mut self, what: &str, why: &str) {
        let _ = writeln!(self.out, "- {what}: skipped ({why})");
    }
    fn note(&mut self, text: &str) {
        let _ = writeln!(self.out, "→ {text}");
    }
}

async fn run_in(config_path: Option<&Path>, env: &Env, r: &mut Report<'_>) {
    let config = match Config::load_in(config_path, env) {
        Ok(c) => c,
        Err(e) => {
            r.fail_config("config", &e.to_string());
            for what in ["secret key", "endpoint", "third_code", "clock", "credits"] {
                r.skip(what, "needs a valid config");
            }
            r.skip("state directory", "needs a valid config");
            return;
        }
    };
    match &config.source {
        Some(p) => r.ok("config", &format!("read {}", p.display())),
        None => r.ok(
            "config",
            "no file found, using defaults (write one from config/hili.example.toml to ./hili.toml or ~/.config/hili/hili.toml)",
        ),
    }
    if let Some(warning) = config.insecure_inline_secret() {
        r.fail("config permissions", &warning);
    }
    let secret = match config.resolve_secret_in(env) {
        Ok((secret, source)) => {
            r.ok("secret key", &format!("found in {source}"));
            Some((secret, source))
        }
        Err(e) => {
            r.fail_config("secret key", &e.to_string());
            None
        }
    };
    check_api(r, &config, secret).await;
    match config.queue_location_in(env) {
        Ok(shared @ crate::store::Location::Postgres { .. }) => {
            match super::doctor_queue::check(&shared).await {
                Ok(found) => r.ok("shared queue", &found),
                Err(problem) => r.fail("shared queue", &problem),
            }
            // Converted copies and thumbnails still go in this machine's state directory.
            check_writable(r, &config.database_path_in(env));
        }
        _ => check_state_dir(r, &config.database_path_in(env)),
    }
}

/// One credits call answers reachability, third_code, clock skew and credits.
async fn check_api(r: &mut Report<'_>, config: &Config, secret: Option<(Secret, SecretSource)>) {
    let base = &config.api.base_url;
    let tc = &config.api.third_code;
    if tc.trim().is_empty() {
        // Every request names the account: without one there is nothing worth sending.
        r.skip("endpoint", "needs a third_code");
        r.fail_config(
            "third_code",
            "api.third_code is empty: set it to the customer code the vendor gave you",
        );
        for what in ["clock", "credits"] {
            r.skip(what, "needs a third_code");
        }
        return;
    }
    if let Some(host) = vendor_host(base) {
        r.note(&format!(
            "contacting the vendor's service at {host} (the default api.base_url); one credits \
             call, nothing is spent"
        ));
    }
    // Without a secret the endpoint can still be shown reachable (it will answer 9999).
    let key = secret
        .as_ref()
        .map(|(s, _)| s.clone())
        .unwrap_or_else(|| Secret::new("hili-doctor-placeholder"));
    let client = match ApiClient::new(ClientOptions {
        base_url: base.clone(),
        third_code: tc.clone(),
        secret: key,
        timeout: config.api.timeout,
    }) {
        Ok(c) => c,
        Err(e) => {
            r.fail("endpoint", &e.to_string());
            for what in ["third_code", "clock", "credits"] {
                r.skip(what, "needs a usable endpoint");
            }
            return;
        }
    };
    let answer = client.credits().await;
    let reached = !matches!(
        answer,
        Err(ApiError::Connect { .. }
            | ApiError::Timeout { .. }
            | ApiError::Transport { .. }
            | ApiError::HttpStatus { .. }
            | ApiError::BadBody { .. })
    );
    match &answer {
        Err(e) if !reached => r.fail("endpoint", &e.to_string()),
        _ => r.ok("endpoint", &format!("{base} answers")),
    }
    match &answer {
        _ if !reached => r.skip("third_code", "the endpoint did not answer"),
        Ok(_) => r.ok("third_code", &format!("{tc:?} accepted")),
        Err(ApiError::BadToken { .. }) if secret.is_none() => {
            r.skip("third_code", "needs the secret key")
        }
        Err(ApiError::BadToken { .. }) => r.fail_config(
            "third_code",
            "not checked: the server rejected the token (errno 9999): check the secret key",
        ),
        Err(ApiError::UnknownAccount { .. }) => r.fail_config(
            "third_code",
            &format!("{tc:?} is not known to the server (errno 9002): check api.third_code"),
        ),
        Err(e) => r.fail("third_code", &e.to_string()),
    }
    match client.clock().offset() {
        Some(o) if o.abs() > CORRECT_ABOVE_SECS => {
            let way = if o > 0 { "behind" } else { "ahead of" };
            r.fail(
                "clock",
                &format!(
                    "the local clock is {} s {way} the server's; hili corrects its tokens, but fix the clock (enable NTP: `timedatectl set-ntp true`)",
                    o.abs()
                ),
            )
        }
        Some(o) => r.ok("clock", &format!("within {} s of the server's", o.abs())),
        None if !reached => r.skip("clock", "the endpoint did not answer"),
        None => r.skip("clock", "the server sent no Date header"),
    }
    match answer {
        Ok(0) => r.fail(
            "credits",
            "0 uploads left: buy a package from the vendor before uploading",
        ),
        Ok(n) => r.ok("credits", &format!("{n} uploads left")),
        Err(_) => r.skip("credits", "the credits call did not succeed"),
    }
}

/// The vendor's host when `base_url` points at it (the default `api.base_url`'s host).
fn vendor_host(base_url: &str) -> Option<String> {
    let host = |u: &str| reqwest::Url::parse(u).ok()?.host_str().map(str::to_string);
    let vendor = host(&crate::config::ApiConfig::default().base_url)?;
    (host(base_url)? == vendor).then_some(vendor)
}

fn check_state_dir(r: &mut Report<'_>, database: &Path) {
    check_database_mode(r, database);
    check_writable(r, database);
}

/// The directory of `database` (this machine's state directory) is writable.
fn check_writable(r: &mut Report<'_>, database: &Path) {
    let dir = match database.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match probe_writable(&dir) {
        Ok(()) => r.ok(
            "state directory",
            &format!(
                "{} is writable (database {})",
                dir.display(),
                database.display()
            ),
        ),
        Err(e) => r.fail(
            "state directory",
            &format!(
                "{} is not writable ({e}): create it with write access for this user, or set queue.database",
                dir.display()
            ),
        ),
    }
}

/// The queue database holds what was paid for and where results went: only its owner may read
/// it. A missing database is fine (it is created with mode 0600 on first use).
fn check_database_mode(r: &mut Report<'_>, database: &Path) {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(database) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => r.fail(
            "database permissions",
            &format!(
                "{} is readable by others (mode {:o}): run `chmod 600 {}`",
                database.display(),
                m.permissions().mode() & 0o777,
                database.display()
            ),
        ),
        Ok(_) => r.ok(
            "database permissions",
            &format!("{} is private (0600)", database.display()),
        ),
        Err(_) => r.ok(
            "database permissions",
            "no database yet; it will be created with mode 0600",
        ),
    }
}

/// Creates `dir` if missing, then creates and removes a file in it.
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let probe = dir.join(format!(".hili-doctor-{}-{nanos}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    let written = f.write_all(b"probe").and_then(|_| f.sync_all());
    drop(f);
    let removed = std::fs::remove_file(&probe);
    written.and(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, header};
    use axum::response::IntoResponse;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    const KEY: &str = "doctor-secret-value-99";

    /// A nums endpoint whose clock is `skew` s ahead; it checks tokens against its own time.
    async fn vendor(skew: i64, nums: i64, errno: Option<i64>) -> String {
        let handler = move |headers: HeaderMap| async move {
            let now = SystemTime::now() + Duration::from_secs(skew as u64);
            let server_secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
            let token_ok = headers
                .get("token")
                .and_then(|v| v.to_str().ok())
                .and_then(|t| t.split_once(','))
                .is_some_and(|(md, t)| {
                    let t: i64 = t.parse().unwrap_or(0);
                    md == crate::api::token::digest(KEY, t) && (t - server_secs).abs() <= 120
                });
            let body = match (token_ok, errno) {
                (false, _) => serde_json::json!({"code":9000,"errno":9999,"msg":"token"}),
                (true, Some(n)) => serde_json::json!({"code":9000,"errno":n,"msg":"x"}),
                (true, None) => serde_json::json!({"code":200,"data":{"code":"tc","nums":nums}}),
            };
            (
                [(header::DATE, httpdate::fmt_http_date(now))],
                body.to_string(),
            )
                .into_response()
        };
        let app = axum::Router::new().fallback(axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    struct Setup {
        dir: tempfile::TempDir,
        config: PathBuf,
    }

    fn setup(base_url: &str, extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), format!("{KEY}\n")).unwrap();
        let config = dir.path().join("hili.toml");
        let db = dir.path().join("state/sub/hili.db");
        std::fs::write(
            &config,
            format!(
                "[api]\nbase_url = \"{base_url}\"\nthird_code = \"tc\"\nsecret_key_file = \"key\"\ntimeout = \"3s\"\n{extra}[queue]\ndatabase = \"{}\"\n",
                db.display()
            ),
        )
        .unwrap();
        Setup { dir, config }
    }

    async fn doctor(s: &Setup) -> (bool, String) {
        let env = Env {
            cwd: s.dir.path().to_path_buf(),
            ..Env::default()
        };
        let mut out = Vec::new();
        let mut r = Report {
            out: &mut out,
            all_ok: true,
            config_problem: false,
        };
        run_in(Some(&s.config), &env, &mut r).await;
        let ok = r.all_ok;
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains(KEY), "{text}");
        (ok, text)
    }

    #[test]
    fn the_json_report_lists_every_check_with_its_outcome() {
        let text = "✔ config: read /x/hili.toml\n✘ credits: 0 uploads left: buy a package\n- clock: skipped (no Date)\n";
        let v = as_json(text, false);
        assert_eq!(v["ok"], false);
        let checks = v["checks"].as_array().unwrap();
        assert_eq!(checks.len(), 3, "{v}");
        assert_eq!(checks[1]["check"], "credits");
        assert_eq!(checks[1]["outcome"], "failed");
        assert_eq!(checks[1]["detail"], "0 uploads left: buy a package");
        assert_eq!(checks[2]["outcome"], "skipped");
    }

    #[test]
    fn the_vendors_own_host_is_recognised_and_nothing_else() {
        let default = crate::config::ApiConfig::default().base_url;
        let host = vendor_host(&format!("{default}/")).expect("the default is the vendor's");
        assert_eq!(vendor_host("http://127.0.0.1:8080"), None);
        assert_eq!(vendor_host(&format!("http://{host}.example.org")), None);
    }

    #[tokio::test]
    async fn a_database_readable_by_others_is_flagged() {
        use std::os::unix::fs::PermissionsExt;
        let s = setup(&vendor(0, 98, None).await, "");
        let db = s.dir.path().join("state/sub/hili.db");
        std::fs::create_dir_all(db.parent().unwrap()).unwrap();
        std::fs::write(&db, b"").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (ok, text) = doctor(&s).await;
        assert!(!ok, "{text}");
        assert!(
            text.contains("✘ database permissions") && text.contains("chmod 600"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn all_good() {
        let s = setup(&vendor(0, 98, None).await, "");
        let (ok, text) = doctor(&s).await;
        assert!(ok, "{text}");
        assert_eq!(
            text.lines().filter(|l| l.starts_with('✔')).count(),
            8,
            "{text}"
        );
        assert!(
            text.contains("98 uploads left") && text.contains("api.secret_key_file"),
            "{text}"
        );
        assert!(s.dir.path().join("state/sub").is_dir());
    }

    #[tokio::test]
    async fn skewed_clock_and_no_credits_fail_with_figures() {
        let s = setup(&vendor(300, 0, None).await, "");
        let (ok, text) = doctor(&s).await;
        assert!(!ok, "{text}");
        let clock = text.lines().find(|l| l.contains("clock")).unwrap();
        assert!(
            clock.starts_with('✘') && clock.contains("30") && clock.contains("NTP"),
            "{text}"
        );
        assert!(text.contains("✘ credits: 0 uploads left"), "{text}");
        assert!(text.contains("✔ third_code"), "{text}");
    }

    #[tokio::test]
    async fn unknown_third_code_and_unreachable_endpoint() {
        let s = setup(&vendor(0, 1, Some(9002)).await, "");
        let (ok, text) = doctor(&s).await;
        assert!(
            !ok && text.contains("✘ third_code") && text.contains("9002"),
            "{text}"
        );
        assert!(text.contains("- credits: skipped"), "{text}");

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let s = setup(&url, "");
        let (ok, text) = doctor(&s).await;
        assert!(!ok && text.contains("✘ endpoint"), "{text}");
        assert!(text.contains("- third_code: skipped"), "{text}");
        assert!(text.contains("✔ state directory"), "{text}");
    }

    #[tokio::test]
    async fn bad_config_skips_the_rest() {
        let s = setup("http://127.0.0.1:9", "colour = \"red\"\n");
        let (ok, text) = doctor(&s).await;
        assert!(!ok, "{text}");
        assert!(
            text.starts_with("✘ config") && text.contains("colour"),
            "{text}"
        );
        assert_eq!(
            text.lines().filter(|l| l.contains("skipped")).count(),
            6,
            "{text}"
        );
    }

    #[tokio::test]
    async fn readable_inline_secret_fails() {
        let url = vendor(0, 5, None).await;
        let s = setup(&url, "");
        let text = std::fs::read_to_string(&s.config).unwrap().replace(
            "secret_key_file = \"key\"",
            &format!("secret_key = \"{KEY}\""),
        );
        std::fs::write(&s.config, text).unwrap();
        std::fs::set_permissions(&s.config, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (ok, text) = doctor(&s).await;
        assert!(!ok && text.contains("✘ config permissions"), "{text}");
        assert!(text.contains("✔ credits: 5"), "{text}");
    }
}
