//! A PostgreSQL cluster of one test's own, for tests that restart the server (the shared test
//! server on `HILI_TEST_DATABASE_URL` serves other tests and must never be disturbed): initdb
//! into a temp directory as the `postgres` user (tests run as root; PostgreSQL refuses to run
//! as root), on a free port, trust auth on 127.0.0.1 only, fsync on — as `.ci/pg-start` does.
//! Stopped (immediately) and deleted when dropped.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The server binaries: `HILI_TEST_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`.
pub(crate) fn server_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("HILI_TEST_PG_BIN").map(PathBuf::from)
        && bin.join("initdb").exists()
    {
        return Some(bin);
    }
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
}

pub(crate) struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    /// The `postgres` user's uid and gid, when this process is root.
    owner: Option<(u32, u32)>,
}

impl PgCluster {
    /// A fresh cluster, started; `None` when the server binaries are not installed.
    pub(crate) fn start() -> Option<PgCluster> {
        let bin = server_bin()?;
        let dir = tempfile::tempdir().expect("temp dir for the cluster");
        // SAFETY: geteuid has no preconditions.
        let owner = (unsafe { libc::geteuid() } == 0).then(postgres_user);
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let cluster = PgCluster {
            dir,
            bin,
            port: free_port(),
            owner,
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-instructions",
            ],
        );
        cluster.up();
        Some(cluster)
    }

    /// The URL of the cluster's `postgres` database.
    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (as a crash would: connections cut, crash recovery at the next
    /// start), leaves it down for `down`, and starts it again.
    pub(crate) fn restart(&self, down: Duration) {
        self.down();
        std::thread::sleep(down);
        self.up();
    }

    /// The server's own log, for a failed test's output.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Starts the server (again).
    pub(crate) fn up(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} \
             -c max_connections=200 -c shared_buffers=32MB",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-o",
                &options,
                "start",
            ],
        );
    }

    /// Stops the server at once, as a crash would.
    pub(crate) fn down(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self.command(tool).args(args).output().expect("run pg tool");
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(tool));
        cmd.current_dir(self.dir.path());
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid).env("HOME", self.dir.path());
        }
        cmd
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}

/// The uid and gid of the `postgres` user (installed with the server).
fn postgres_user() -> (u32, u32) {
    let name = c"postgres";
    // SAFETY: getpwnam with a NUL-terminated name; the record is read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "no `postgres` user to run the test cluster as"
    );
    // SAFETY: not null, checked above.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

/// A port nothing listens on now (the kernel's pick; the cluster takes it just after).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}
