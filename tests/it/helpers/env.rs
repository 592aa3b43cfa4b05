//! The integration tests' environment: a simulator, a config and a queue (a SQLite file in a
//! temp directory, or a fresh database on the PostgreSQL test server: [`Env::on`]) in a temp
//! directory, and ways to run hili against them in-process or as a child process.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hili::api::client::{ApiClient, ClientOptions};
use hili::config::Config;
use hili::pipeline::{self, Ctx, RunOptions, Settings, Summary};
use hili::repair::{Repair, Rgb};
use hili::secret::Secret;
use hili::sim::{SimHandle, SimOptions};
use hili::store::{Location, NewJob, Store};
use tokio_util::sync::CancellationToken;

use super::backend::Backend;
use super::{NoProgress, Out, SECRET, THIRD, files_under, integrity, run};

/// The node an [`Env`] on PostgreSQL is, in-process and in the `hili` it runs.
pub(crate) const NODE: &str = "node-a";

/// A temp directory with an inbox, an output dir, a queue and a config file pointing at a
/// running simulator.
pub(crate) struct Env {
    pub dir: tempfile::TempDir,
    pub sim: SimHandle,
    pub inbox: PathBuf,
    pub out: PathBuf,
    /// The SQLite file (on PostgreSQL no file: the state directory's would-be queue).
    pub db: PathBuf,
    pub config: PathBuf,
    /// Where the queue is, as `hili` finds it from the config.
    pub location: Location,
}

impl Env {
    pub(crate) async fn new(opts: SimOptions) -> Env {
        Env::with_queue(opts, "").await
    }

    /// `queue_extra` is appended to the `[queue]` section of the config.
    pub(crate) async fn with_queue(opts: SimOptions, queue_extra: &str) -> Env {
        Env::build(opts, queue_extra, None).await
    }

    /// An environment whose queue is on `backend`: for PostgreSQL a fresh database on the
    /// test server, worked as node [`NODE`]. `None`: no test server (the test returns early).
    pub(crate) async fn on(backend: Backend, opts: SimOptions) -> Option<Env> {
        Env::on_with_queue(backend, opts, "").await
    }

    /// [`Env::on`] with `queue_extra` appended to the `[queue]` section of the config.
    pub(crate) async fn on_with_queue(
        backend: Backend,
        opts: SimOptions,
        queue_extra: &str,
    ) -> Option<Env> {
        let url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(hili::store::pg::testdb::fresh().await?),
        };
        Some(Env::build(opts, queue_extra, url).await)
    }

    async fn build(opts: SimOptions, queue_extra: &str, url: Option<String>) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let sim = hili::sim::serve(opts).await.unwrap();
        let inbox = dir.path().join("inbox");
        let out = dir.path().join("out");
        let db = dir.path().join("state/hili.db");
        std::fs::create_dir_all(&inbox).unwrap();
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, SECRET).unwrap();
        let (database, location) = match url {
            None => (
                format!("database = \"{}\"", db.display()),
                Location::Sqlite(db.clone()),
            ),
            Some(url) => (
                format!("database = \"{url}\"\nnode = \"{NODE}\""),
                Location::Postgres {
                    url,
                    node: NODE.parse().unwrap(),
                    // The child's too: `hili` gets it as STATE_DIRECTORY.
                    local_dir: dir.path().join("state"),
                },
            ),
        };
        let config = dir.path().join("hili.toml");
        std::fs::write(
            &config,
            format!(
                "[api]\nbase_url = \"{}\"\nthird_code = \"{THIRD}\"\nsecret_key_file = \"{}\"\n\
                 requests_per_second = 500.0\nburst = 50\ntimeout = \"5s\"\npoll_interval = \"100ms\"\n\n\
                 [queue]\n{database}\n{queue_extra}\n",
                sim.base_url(),
                secret_file.display(),
            ),
        )
        .unwrap();
        Env {
            dir,
            sim,
            inbox,
            out,
            db,
            config,
            location,
        }
    }

    pub(crate) fn backend(&self) -> Backend {
        match self.location {
            Location::Sqlite(_) => Backend::Sqlite,
            Location::Postgres { .. } => Backend::Postgres,
        }
    }

    pub(crate) fn config(&self) -> Config {
        Config::load(Some(&self.config)).unwrap()
    }

    /// A handle on the queue (as node [`NODE`] on PostgreSQL).
    pub(crate) async fn store(&self) -> Store {
        Store::open_at(&self.location).await.unwrap()
    }

    /// Whether the queue survived intact: SQLite's `PRAGMA integrity_check` of the file. On
    /// PostgreSQL the server keeps its own files; what a crash of hili can break there is the
    /// rows, which the callers check.
    pub(crate) async fn queue_intact(&self) -> Result<(), String> {
        match self.backend() {
            Backend::Sqlite => integrity(&self.db).await,
            Backend::Postgres => Ok(()),
        }
    }

    /// Queues every file under the inbox (as `hili add` does) with `repair`.
    pub(crate) async fn add(&self, repair: Repair, rgb: Option<Rgb>) -> usize {
        let store = self.store().await;
        let jobs: Vec<NewJob> = hili::media::walk(std::slice::from_ref(&self.inbox))
            .map(|f| f.unwrap())
            .map(|f| NewJob::from_found(f, self.out.clone(), repair, rgb))
            .collect();
        let n = jobs.len();
        store.enqueue_many(jobs).await.unwrap();
        store.close().await;
        n
    }

    pub(crate) fn client(&self) -> ApiClient {
        ApiClient::new(ClientOptions {
            base_url: self.sim.base_url(),
            third_code: THIRD.into(),
            secret: Secret::new(SECRET),
            timeout: Duration::from_secs(5),
        })
        .unwrap()
    }

    /// The config's settings, with a short backoff so retries do not dominate test time.
    pub(crate) fn settings(&self) -> Settings {
        let mut s = Settings::from_config(&self.config());
        s.retry_base = Duration::from_millis(50);
        s
    }

    /// Runs the pipeline in-process until the queue is drained, bounded in time.
    pub(crate) async fn run_once(&self, settings: Settings) -> Summary {
        self.run_with(
            settings,
            RunOptions {
                once: true,
                exit_when_blocked: true,
            },
            CancellationToken::new(),
        )
        .await
    }

    pub(crate) async fn run_with(
        &self,
        settings: Settings,
        opts: RunOptions,
        stop: CancellationToken,
    ) -> Summary {
        let store = self.store().await;
        // As `hili run` does: a node of a shared queue joins before it works.
        store.join().await.unwrap();
        let ctx = Ctx::new(store, self.client(), settings, stop);
        let summary = tokio::time::timeout(
            Duration::from_secs(60),
            pipeline::run(ctx.clone(), opts, Arc::new(NoProgress)),
        )
        .await
        .expect("pipeline run timed out")
        .expect("pipeline run failed");
        ctx.store.close().await;
        summary
    }

    /// `hili ARGS` as a child process using this environment's config.
    pub(crate) fn hili(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hili"));
        c.env("HILI_CONFIG", &self.config)
            .env_remove("HILI_SECRET_KEY")
            .env_remove("HILI_CRASH_AT")
            .env("HILI_LOG", "info");
        if let Location::Postgres { local_dir, .. } = &self.location {
            // The node's own files where the in-process store puts them.
            c.env("STATE_DIRECTORY", local_dir);
        }
        c
    }

    /// `hili ARGS` left running in this environment's temp directory, its stderr (the log) in
    /// the file `log` there; returns the child and the log's path.
    pub(crate) fn spawn_logged(&self, args: &[&str], log: &str) -> (std::process::Child, PathBuf) {
        let path = self.dir.path().join(log);
        let file = std::fs::File::create(&path).unwrap();
        let child = self
            .hili()
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn hili");
        (child, path)
    }

    /// `hili ARGS` with this environment's config, in its temp directory, to completion.
    pub(crate) async fn run_hili<I, S>(&self, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(self.hili(), self.dir.path(), args).await
    }

    /// Every regular file under the output directory.
    pub(crate) fn outputs(&self) -> Vec<PathBuf> {
        files_under(&self.out)
    }
}
