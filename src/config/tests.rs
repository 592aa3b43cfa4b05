//! Loading: the search order, unknown keys, durations and validation, the database path and
//! the secret key's sources.

use super::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;

fn env(cwd: &Path, vars: &[(&str, &Path)]) -> Env {
    Env {
        vars: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_os_str().to_owned()))
            .collect(),
        cwd: cwd.to_path_buf(),
    }
}

fn write(path: &Path, text: &str) -> PathBuf {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(path, text).unwrap();
    path.to_path_buf()
}

#[test]
fn example_file_equals_the_defaults() {
    let text = include_str!("../../config/hili.example.toml");
    let parsed = Config::parse(text, Path::new("hili.example.toml")).unwrap();
    assert_eq!(parsed, Config::default());
}

#[test]
fn search_order() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let cwd = root.join("cwd");
    let xdg = root.join("xdg");
    let home = root.join("home");
    fs::create_dir_all(&cwd).unwrap();
    let e = env(&cwd, &[("XDG_CONFIG_HOME", &xdg), ("HOME", &home)]);
    // Nothing anywhere: defaults (unless this machine has /etc/hili/hili.toml).
    if !Path::new("/etc/hili/hili.toml").exists() {
        let c = Config::load_in(None, &e).unwrap();
        assert_eq!(c.source, None);
        assert_eq!(c, Config::default());
    }
    let homecfg = write(&home.join(".config/hili/hili.toml"), "[api]\nburst = 5\n");
    let no_xdg = env(&cwd, &[("HOME", &home)]);
    assert_eq!(locate(None, &no_xdg), Some(homecfg));
    let xdgcfg = write(&xdg.join("hili/hili.toml"), "[api]\nburst = 6\n");
    assert_eq!(locate(None, &e), Some(xdgcfg));
    let local = write(&cwd.join("hili.toml"), "[api]\nburst = 7\n");
    assert_eq!(locate(None, &e), Some(local.clone()));
    let envcfg = write(&root.join("env.toml"), "[api]\nburst = 8\n");
    let mut e2 = e.clone();
    e2.vars
        .insert("HILI_CONFIG".into(), envcfg.as_os_str().to_owned());
    assert_eq!(Config::load_in(None, &e2).unwrap().api.burst, 8);
    let explicit = write(&root.join("x.toml"), "[api]\nburst = 9\n");
    let c = Config::load_in(Some(&explicit), &e2).unwrap();
    assert_eq!((c.api.burst, c.source), (9, Some(explicit)));
    assert_eq!(Config::load_in(None, &e).unwrap().source, Some(local));
    // An explicit file that is missing is an error, not defaults.
    let err = Config::load_in(Some(&root.join("missing.toml")), &e).unwrap_err();
    assert!(err.to_string().contains("missing.toml"), "{err}");
}

#[test]
fn unknown_key_names_key_and_file() {
    for text in [
        "[api]\nbase_ulr = \"http://x\"\n",
        "[queeue]\n",
        "verbose = true\n",
    ] {
        let err = Config::parse(text, Path::new("/etc/hili/hili.toml")).unwrap_err();
        let msg = err.to_string();
        let key = if text.contains("base_ulr") {
            "base_ulr"
        } else if text.contains("queeue") {
            "queeue"
        } else {
            "verbose"
        };
        assert!(
            msg.contains(key) && msg.contains("/etc/hili/hili.toml"),
            "{msg}"
        );
    }
}

#[test]
fn parse_errors_never_echo_an_inline_secret() {
    for text in [
        "[api]\nsecret_key = 98765432109\n",
        "[api]\nsecret_key = \"98765432109\n",
        "[api]\nsecret_key = '98765432109' x\n",
    ] {
        let msg = Config::parse(text, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            !msg.contains("98765432109") && msg.contains("line 2"),
            "{msg}"
        );
    }
}

#[test]
fn durations_and_validation() {
    let c = Config::parse(
        "[api]\ntimeout = \"1m 30s\"\npoll_interval = \"500ms\"\n[queue]\ncredits_recheck = \"1h\"\non_expired = \"reupload\"\n",
        Path::new("c.toml"),
    )
    .unwrap();
    assert_eq!(c.api.timeout, Duration::from_secs(90));
    assert_eq!(c.api.poll_interval, Duration::from_millis(500));
    assert_eq!(c.queue.credits_recheck, Duration::from_secs(3600));
    assert_eq!(c.queue.on_expired, OnExpired::Reupload);
    for (text, needle) in [
        ("[api]\ntimeout = \"soon\"\n", "soon"),
        ("[api]\ntimeout = 60\n", "timeout"),
        (
            "[api]\nrequests_per_second = 0.0\n",
            "api.requests_per_second",
        ),
        ("[api]\nburst = 0\n", "api.burst"),
        ("[api]\npoll_interval = \"2h\"\n", "api.poll_interval"),
        ("[api]\nbase_url = \"ftp://x\"\n", "api.base_url"),
        (
            "[queue]\nupload_concurrency = 0\n",
            "queue.upload_concurrency",
        ),
        (
            "[queue]\ndownload_concurrency = 0\n",
            "queue.download_concurrency",
        ),
        ("[queue]\non_expired = \"retry\"\n", "retry"),
    ] {
        let msg = Config::parse(text, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(needle) && msg.contains("c.toml"),
            "{text}: {msg}"
        );
    }
}

#[test]
fn database_path_defaults() {
    let t = tempfile::tempdir().unwrap();
    let c = Config::default();
    let p = |vars: &[(&str, &Path)]| c.database_path_in(&env(t.path(), vars));
    assert_eq!(
        p(&[
            ("STATE_DIRECTORY", Path::new("/var/lib/hili")),
            ("HOME", Path::new("/h"))
        ]),
        PathBuf::from("/var/lib/hili/hili.db")
    );
    assert_eq!(
        p(&[
            ("XDG_STATE_HOME", Path::new("/s")),
            ("HOME", Path::new("/h"))
        ]),
        PathBuf::from("/s/hili/hili.db")
    );
    assert_eq!(
        p(&[("HOME", Path::new("/h"))]),
        PathBuf::from("/h/.local/state/hili/hili.db")
    );
    let set = Config::parse("[queue]\ndatabase = \"/d/j.db\"\n", Path::new("c")).unwrap();
    assert_eq!(
        set.database_path_in(&env(t.path(), &[])),
        PathBuf::from("/d/j.db")
    );
}

#[test]
fn secret_source_order() {
    let t = tempfile::tempdir().unwrap();
    let creds = t.path().join("creds");
    write(&creds.join("hili-secret"), "from-creds\n");
    write(&t.path().join("key.txt"), "from-file\r\n");
    let cfg_path = write(
        &t.path().join("hili.toml"),
        "[api]\nsecret_key = \"from-inline\"\nsecret_key_file = \"key.txt\"\n",
    );
    let mut cfg = Config::load_in(Some(&cfg_path), &env(t.path(), &[])).unwrap();
    let key = |c: &Config, e: &Env| {
        let (s, src) = c.resolve_secret_in(e).unwrap();
        (s.expose().to_string(), src)
    };
    let mut e = env(t.path(), &[("CREDENTIALS_DIRECTORY", &creds)]);
    e.vars.insert("HILI_SECRET_KEY".into(), "from-env".into());
    assert_eq!(key(&cfg, &e), ("from-env".into(), SecretSource::Env));
    e.vars.remove("HILI_SECRET_KEY");
    assert_eq!(
        key(&cfg, &e),
        (
            "from-file".into(),
            SecretSource::File(t.path().join("key.txt"))
        )
    );
    cfg.api.secret_key_file = None;
    assert_eq!(
        key(&cfg, &e),
        (
            "from-creds".into(),
            SecretSource::Credentials(creds.join("hili-secret"))
        )
    );
    let bare = env(t.path(), &[]);
    assert_eq!(
        key(&cfg, &bare),
        ("from-inline".into(), SecretSource::Inline(Some(cfg_path)))
    );
    cfg.api.secret_key = None;
    assert!(matches!(
        cfg.resolve_secret_in(&bare),
        Err(ConfigError::Secret(SecretError::NoSecret))
    ));
    cfg.api.secret_key_file = Some(t.path().join("nope"));
    let err = cfg.resolve_secret_in(&bare).unwrap_err().to_string();
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn readable_inline_secret_warns_and_debug_hides_it() {
    let t = tempfile::tempdir().unwrap();
    let p = write(
        &t.path().join("hili.toml"),
        "[api]\nsecret_key = \"inline-secret-value\"\n",
    );
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    let c = Config::load_in(Some(&p), &env(t.path(), &[])).unwrap();
    let w = c.insecure_inline_secret().unwrap();
    assert!(w.contains("chmod 600") && w.contains("hili.toml"), "{w}");
    assert!(!format!("{c:?}").contains("inline-secret-value"));
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(c.insecure_inline_secret(), None);
}

#[test]
fn account_prices_credits_in_the_users_money() {
    let default = Config::default().account;
    assert_eq!(default.cost(5), "¥25.00");
    assert_eq!(default.cost(0), "¥0.00");
    let c = Config::parse(
        "[account]\ncredit_price = 0.7\ncurrency = \"CNY\"\n",
        Path::new("t.toml"),
    )
    .unwrap();
    assert_eq!(c.account.cost(3), "2.10 CNY");
    let c = Config::parse("[account]\ncurrency = \"$\"\n", Path::new("t.toml")).unwrap();
    assert_eq!(c.account.cost(2), "$10.00", "the price keeps its default");
}

#[test]
fn account_refuses_a_negative_price_and_an_empty_or_long_currency() {
    for (text, key) in [
        ("credit_price = -1.0", "account.credit_price"),
        ("credit_price = nan", "account.credit_price"),
        ("currency = \"\"", "account.currency"),
        ("currency = \"   \"", "account.currency"),
        ("currency = \"dollars of somewhere\"", "account.currency"),
    ] {
        let err = Config::parse(&format!("[account]\n{text}\n"), Path::new("t.toml"))
            .expect_err(text)
            .to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
    let err = Config::parse("[account]\nprice = 5\n", Path::new("t.toml"))
        .expect_err("unknown key")
        .to_string();
    assert!(err.contains("price"), "{err}");
}

#[test]
fn budget_per_day_is_read_and_defaults_to_no_limit() {
    assert_eq!(Config::default().queue.budget_per_day, 0);
    let c = Config::parse(
        "[queue]\nbudget = 4\nbudget_per_day = 20\n",
        Path::new("t.toml"),
    )
    .unwrap();
    assert_eq!((c.queue.budget, c.queue.budget_per_day), (4, 20));
}

#[test]
fn the_packaged_config_names_the_service_queue_and_holds_no_secret() {
    let text = include_str!("../../config/hili.system.toml");
    let parsed = Config::parse(text, Path::new("/etc/hili/hili.toml")).unwrap();
    assert_eq!(
        parsed.queue.database.as_deref(),
        Some(Path::new("/var/lib/hili/hili.db"))
    );
    assert!(parsed.api.secret_key.is_none() && parsed.api.secret_key_file.is_none());
    assert!(parsed.watch.is_empty());
    // Everything else is the default, so the example file documents it.
    let mut defaults = Config::default();
    defaults.queue.database = parsed.queue.database.clone();
    assert_eq!(parsed, defaults);
}
