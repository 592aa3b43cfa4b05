//! A `hili run` daemon as a child process: its log goes to a file of its own in the test's
//! directory, printed if the test fails; stopped with SIGTERM (bounded), killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::Env;

pub(crate) struct Daemon(pub(crate) Child, pub(crate) PathBuf);

impl Daemon {
    pub(crate) fn start(env: &Env) -> Daemon {
        Daemon::start_with(env, &[])
    }

    /// With `vars` added to its environment.
    pub(crate) fn start_with(env: &Env, vars: &[(&str, &str)]) -> Daemon {
        let log = (0..)
            .map(|i| env.dir.path().join(format!("daemon-{i}.log")))
            .find(|p| !p.exists())
            .unwrap();
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = env.hili();
        cmd.arg("run")
            .current_dir(env.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        Daemon(cmd.spawn().expect("spawn hili run"), log)
    }

    pub(crate) fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, sig) };
    }

    /// SIGTERM, then the exit code and the log (bounded).
    pub(crate) fn stop(self) -> (Option<i32>, String) {
        self.signal(libc::SIGTERM);
        self.wait_exit()
    }

    /// Waits for the exit (bounded), a signal already sent: the exit code and the log.
    pub(crate) fn wait_exit(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return (
                    status.code(),
                    std::fs::read_to_string(&self.1).unwrap_or_default(),
                );
            }
            assert!(Instant::now() < deadline, "the daemon did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.1).unwrap_or_default();
            eprintln!("--- daemon log {} ---\n{log}", self.1.display());
        }
    }
}
