//! A truthful terminal: a run counts only its own jobs (summary, `--json`, the store's tally the
//! progress bar draws from); no colour under `NO_COLOR` or `TERM=dumb`, even on a terminal; one
//! exit-code table for every command; `hili jobs` with a header and times; `hili status` with
//! the failed jobs' reasons.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::process::Stdio;

use serde_json::Value;

use crate::helpers::*;

fn json(out: &Out) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e})\n{}", out.both()))
}

/// `add inbox --repair sr --output out`.
const ADD: [&str; 6] = ["add", "inbox", "--repair", "sr", "--output", "out"];

/// A queue with an older run in it: one job done, two failed (text files posing as photos,
/// failed at `hili add`, before the run).
async fn env_with_an_older_run() -> Env {
    let env = Env::new(fast_sim()).await;
    write_jpeg(&env.inbox.join("old.jpg"), 1);
    for name in ["broken-1.jpg", "broken-2.jpg"] {
        std::fs::write(env.inbox.join(name), "only text, not a photo\n").unwrap();
    }
    env.run_hili(ADD).await.expect_code(0);
    env.run_hili(["run", "--once"]).await.expect_code(0);
    env
}

#[tokio::test]
async fn a_run_among_older_jobs_counts_only_its_own() {
    let env = env_with_an_older_run().await;
    // The progress bar's source: the store's tally after the run's starting mark.
    let store = env.store().await;
    let mark = store.last_event_id().await.unwrap();
    assert!(mark > 0);
    let before = store.run_tally(mark).await.unwrap();
    assert_eq!((before.ended.len(), before.active), (0, 0), "{before:?}");
    store.close().await;

    write_jpeg(&env.inbox.join("new.jpg"), 2);
    env.run_hili(ADD).await.expect_code(0);
    let store = env.store().await;
    let queued = store.run_tally(mark).await.unwrap();
    assert_eq!((queued.ended.len(), queued.active), (0, 1), "{queued:?}");
    store.close().await;

    let out = env.run_hili(["run", "--once", "--json"]).await;
    out.expect_code(0);
    let s = json(&out);
    assert_eq!(
        (
            &s["jobs"],
            &s["done"],
            &s["failed"],
            &s["held"],
            &s["unfinished"]
        ),
        (&1.into(), &1.into(), &0.into(), &0.into(), &0.into()),
        "{s}"
    );
    assert_eq!(
        (&s["credits_spent"], &s["exit_code"]),
        (&1.into(), &0.into())
    );

    let store = env.store().await;
    let after = store.run_tally(mark).await.unwrap();
    store.close().await;
    assert_eq!(after.ended.values().sum::<u64>(), 1, "{after:?}");
    assert_eq!(after.active, 0);
    // The queue as a whole still holds the older run's jobs.
    let st = json(&env.run_hili(["status", "--json"]).await);
    assert_eq!(
        (&st["counts"]["done"], &st["counts"]["failed"]),
        (&2.into(), &2.into())
    );
}

/// A pseudo-terminal: the parent's end, and the child's end to hand to it as stderr.
fn pty() -> (std::fs::File, std::fs::File) {
    // SAFETY: plain libc calls on a descriptor this function owns; the name buffer is sized.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(master >= 0, "posix_openpt");
        let master = OwnedFd::from_raw_fd(master);
        use std::os::fd::AsRawFd;
        assert_eq!(libc::grantpt(master.as_raw_fd()), 0);
        assert_eq!(libc::unlockpt(master.as_raw_fd()), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(
            libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()),
            0
        );
        let name = std::ffi::CStr::from_ptr(name.as_ptr())
            .to_string_lossy()
            .into_owned();
        let child = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(name)
            .unwrap();
        (std::fs::File::from(master), child)
    }
}

/// `hili ARGS` with debug logging (for `jobs`: the database's statements), its stdout and
/// stderr a terminal, `vars` added to its environment. Returns what reached the terminal.
fn on_a_terminal(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Vec<u8> {
    let (mut master, child_end) = pty();
    let mut cmd = env.hili();
    cmd.args(args)
        .current_dir(env.dir.path())
        .env("HILI_LOG", "debug")
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR")
        .env_remove("CLICOLOR_FORCE")
        // As on a CI machine, where clap's own rule colours even a `TERM=dumb` terminal.
        .env("CI", "true")
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .stdout(child_end.try_clone().unwrap())
        .stderr(child_end);
    let mut child = cmd.spawn().unwrap();
    // Our copy of the child's end goes with `cmd`: the read below ends when the child exits.
    drop(cmd);
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once the child's end is closed and everything was read.
        while let Ok(n @ 1..) = master.read(&mut buf) {
            seen.extend_from_slice(&buf[..n]);
        }
        seen
    });
    assert!(child.wait().unwrap().success());
    reader.join().unwrap()
}

#[tokio::test]
async fn no_colour_with_no_color_or_a_dumb_terminal_even_on_a_terminal() {
    let env = Env::new(fast_sim()).await;
    env.store().await.close().await;
    // The log (tracing's colours), and clap's help (its own).
    for (args, shown) in [(&["jobs"][..], "DEBUG"), (&["--help"], "Exit codes")] {
        let plain = on_a_terminal(&env, args, &[]);
        let text = String::from_utf8_lossy(&plain);
        assert!(text.contains(shown), "{args:?}: {text}");
        assert!(
            plain.contains(&0x1b),
            "{args:?}: a terminal gets colour: the test sees it"
        );
        for vars in [&[("NO_COLOR", "1")][..], &[("TERM", "dumb")]] {
            let seen = on_a_terminal(&env, args, vars);
            let text = String::from_utf8_lossy(&seen);
            assert!(text.contains(shown), "{args:?} {vars:?}: {text}");
            assert!(
                !seen.contains(&0x1b),
                "{args:?} {vars:?} still coloured: {text:?}"
            );
        }
    }
}

#[tokio::test]
async fn every_command_exits_by_the_one_table() {
    let env = env_with_an_older_run().await;
    let unreachable = other_config(&env, "base_url = ", "base_url = \"http://127.0.0.1:9\"\n#");
    let no_secret = other_config(&env, "secret_key_file = ", "#");
    let no_db = other_config(&env, "database = ", "database = \"nowhere/hili.db\"\n#");
    let cases: &[(&[&str], i32)] = &[
        (&["add", "inbox", "--repair", "sr", "--output", "out"], 0),
        (&["add", "nope", "--repair", "sr", "--output", "out"], 2),
        (
            &[
                "add", "inbox", "--repair", "sr", "--rgb", "1,2,3", "--output", "out",
            ],
            2,
        ),
        (
            &[
                "add", "inbox", "--repair", "sr", "--output", "out", "--bogus",
            ],
            2,
        ),
        (&["jobs"], 0),
        (&["jobs", "--state", "finished"], 2),
        (&["jobs", "--config", &no_db], 1),
        (&["status"], 0),
        (&["status", "--config", &no_db], 1),
        (&["credits", "--json"], 0),
        (&["credits", "--config", &no_secret], 2),
        (&["credits", "--config", &unreachable], 1),
        (&["doctor", "--json"], 0),
        (&["doctor", "--config", &unreachable], 1),
        (&["export", "--format", "csv", "--since", "2026-11-30"], 0),
        (&["export", "--format", "csv", "--since", "yesterday"], 2),
        (&["retry", "999"], 1),
        (&["retry"], 2),
        (&["run", "--json"], 2),
    ];
    for (args, code) in cases {
        let out = env.run_hili(*args).await;
        assert_eq!(
            out.code,
            Some(*code),
            "hili {}\n{}",
            args.join(" "),
            out.both()
        );
    }
    // A missing path names itself, and nothing was queued.
    let out = env
        .run_hili(["add", "nope", "--repair", "sr", "--output", "out"])
        .await;
    assert!(
        out.stderr.contains("nope: no such file or folder"),
        "{}",
        out.both()
    );
    // 3 and 1 of `run --once`: failed jobs retried while their files are still broken, then a
    // queue database that is a folder.
    env.run_hili(["retry", "--failed"]).await.expect_code(0);
    env.run_hili(["run", "--once"]).await.expect_code(3);
    let folder_db = other_config(&env, "database = ", "database = \"inbox\"\n#");
    env.run_hili(["run", "--once", "--config", &folder_db])
        .await
        .expect_code(1);
    // The table is in the help.
    let help = env.run_hili(["--help"]).await;
    help.expect_code(0);
    for row in [
        "  0  success",
        "  1  anything else",
        "  2  usage",
        "  3  some job",
    ] {
        assert!(help.stdout.contains(row), "{row}\n{}", help.stdout);
    }
}

/// A copy of the environment's config with the line starting with `key` turned into `with`
/// followed by the old line (so a `#` at the end of `with` comments it out).
fn other_config(env: &Env, key: &str, with: &str) -> String {
    let text = std::fs::read_to_string(&env.config).unwrap();
    let changed: String = text
        .lines()
        .map(|l| match l.starts_with(key) {
            true => format!("{with}{l}\n"),
            false => format!("{l}\n"),
        })
        .collect();
    assert_ne!(changed, text, "no line starts with {key}");
    let path = env
        .dir
        .path()
        .join(format!("{}.toml", key.trim_end_matches([' ', '='])));
    std::fs::write(&path, changed).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn jobs_has_a_header_and_times_and_json_gives_them_in_utc() {
    let env = env_with_an_older_run().await;
    let out = env.run_hili(["jobs"]).await;
    out.expect_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.both());
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "id", "state", "repair", "queued", "changed", "source", "output", "or", "reason"
        ]
    );
    let today = local_today();
    assert!(
        lines[1..].iter().all(|l| l.contains(&today)),
        "{}",
        out.stdout
    );

    let all = json(&env.run_hili(["jobs", "--json"]).await);
    for j in all.as_array().unwrap() {
        for key in ["created_at", "updated_at"] {
            let t = j[key].as_str().unwrap_or_else(|| panic!("no {key}: {j}"));
            assert!(t.ends_with('Z') && t.len() == 24, "{key} {t}");
            let at = humantime::parse_rfc3339(t).unwrap();
            let age = std::time::SystemTime::now().duration_since(at).unwrap();
            assert!(age.as_secs() < 600, "{key} {t} is not now");
        }
        assert!(j["updated_at"].as_str() >= j["created_at"].as_str(), "{j}");
    }
}

/// Today's date as `hili jobs` writes it, in local time (`date` reads the same zone).
fn local_today() -> String {
    let out = std::process::Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn status_names_the_failed_jobs_reasons_and_where_to_see_them_all() {
    let env = env_with_an_older_run().await;
    let out = env.run_hili(["status"]).await;
    out.expect_code(0);
    let text = &out.stdout;
    let top = text
        .lines()
        .find(|l| l.trim_start().starts_with("2 × "))
        .unwrap_or_else(|| panic!("no reason counted twice\n{text}"));
    assert!(
        top.contains("not a JPEG or PNG") && !top.contains("broken-"),
        "{top}"
    );
    assert!(
        text.contains("2 failed job(s)") && text.contains("hili jobs --state failed"),
        "{text}"
    );

    let st = json(&env.run_hili(["status", "--json"]).await);
    assert_eq!(st["failed_reasons"][0]["jobs"], 2, "{st}");
}
