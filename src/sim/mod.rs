//! `hili sim`: an offline simulator of the Hili PhotoEnhance API as `docs/hili-api.md`
//! describes it — the four endpoints with the vendor's JSON shapes and errnos, token checks
//! against its own (skewable) clock, credits, real image results that expire, and seeded fault
//! injection (HTML 500s, connection resets, slow answers, charged-but-unanswered uploads). A
//! ledger of every charge lets tests prove that no credit was spent twice. It speaks only HTTP
//! and knows nothing of the client.
//!
//! Rooms: `routes` (endpoints, admin, Date/log layer), `upload` (the charging endpoint),
//! `form` (multipart/urlencoded bodies, uploads streamed to disk), `state` (clock, credits,
//! ledger, jobs), `transform` (image work), `faults` + `conn` (fault injection and the
//! hand-rolled connection server that can reset a connection), `hostile` (test-only broken or
//! malicious answers, see its table), `args` (the command line).

mod args;
mod conn;
mod faults;
mod form;
mod hostile;
mod hostile_answer;
mod reply;
mod routes;
mod state;
mod transform;
mod upload;
mod workdir;

use std::fmt;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use args::SimArgs;
pub use hostile::{ApiSite, Hostile, HostileMode};
pub use hostile_answer::{EVIL_NAME, HUGE_RESULT_BYTES};
pub use state::{Charge, Ledger, Stall};
use workdir::WorkDir;

/// How the simulator behaves. `listen` should stay on loopback (the default): anything else
/// exposes a fake paid service to the network.
#[derive(Clone)]
pub struct SimOptions {
    pub listen: SocketAddr,
    pub third_code: String,
    pub secret: String,
    pub credits: u64,
    /// How long status answers 100 after an upload (the shortest, with `processing_up_to`).
    pub processing: Duration,
    /// With a value, each upload's processing time is drawn (seeded) from `processing..=this`.
    pub processing_up_to: Option<Duration>,
    /// How long a result stays downloadable after processing.
    pub retention: Duration,
    pub seed: u64,
    pub faults: Faults,
    /// Delay of a `slow` fault.
    pub latency: Duration,
    /// Seconds added to real time to make the sim's clock (Date header, token check).
    pub clock_offset_secs: i64,
    /// The result is the uploaded bytes unchanged, and nothing is decoded (benchmarks).
    pub passthrough: bool,
    /// Where uploads and results live; `None`: a fresh temp dir, removed at shutdown.
    pub work_dir: Option<PathBuf>,
    /// Test-only broken or malicious answers (see `hostile.rs`); `None`: an honest server.
    pub hostile: Option<Hostile>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            third_code: "demo".into(),
            secret: "demo-secret".into(),
            credits: 100,
            processing: Duration::from_secs(3),
            processing_up_to: None,
            retention: Duration::from_secs(3600),
            seed: 0,
            faults: Faults::default(),
            latency: Duration::from_secs(2),
            clock_offset_secs: 0,
            passthrough: false,
            work_dir: None,
            hostile: None,
        }
    }
}

impl fmt::Debug for SimOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimOptions")
            .field("listen", &self.listen)
            .field("third_code", &self.third_code)
            .field("secret", &"<redacted>")
            .field("credits", &self.credits)
            .field("processing", &self.processing)
            .field("retention", &self.retention)
            .field("seed", &self.seed)
            .field("faults", &self.faults)
            .field("latency", &self.latency)
            .field("clock_offset_secs", &self.clock_offset_secs)
            .field("passthrough", &self.passthrough)
            .field("work_dir", &self.work_dir)
            .field("hostile", &self.hostile)
            .finish()
    }
}

/// Fault probabilities, each in [0, 1]. Missing JSON fields are 0.
#[derive(Clone, Copy, Default, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// HTTP 500 with an HTML body (API endpoints and result downloads).
    pub http500: f64,
    /// Connection reset (RST) before anything is done.
    pub reset: f64,
    /// The answer is delayed by `latency` after the work is done.
    pub slow: f64,
    /// Upload answered 9006, not charged.
    pub e9006: f64,
    /// Upload answered 9009, not charged.
    pub e9009: f64,
    /// Upload charged and its job created, then the connection reset unanswered.
    pub charge_drop: f64,
}

impl Faults {
    /// Checks every probability is a number in [0, 1].
    pub fn validate(&self) -> Result<(), String> {
        let all = [
            ("http500", self.http500),
            ("reset", self.reset),
            ("slow", self.slow),
            ("e9006", self.e9006),
            ("e9009", self.e9009),
            ("charge_drop", self.charge_drop),
        ];
        match all.iter().find(|(_, p)| !(0.0..=1.0).contains(p)) {
            Some((k, p)) => Err(format!(
                "fault probability {k} = {p} is out of range: give a number from 0 to 1"
            )),
            None => Ok(()),
        }
    }
}

/// A running simulator. Dropping it stops the server too; `shutdown` also waits for it.
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<state::Shared>,
    stop: CancellationToken,
    accept: Option<JoinHandle<()>>,
    tasks: TaskTracker,
    dir: WorkDir,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    pub fn ledger(&self) -> Ledger {
        self.shared.ledger()
    }

    pub fn add_credits(&self, n: u64) {
        self.shared.add_credits(n);
    }

    pub fn set_credits(&self, n: u64) {
        self.shared.set_credits(n);
    }

    pub fn credits(&self) -> u64 {
        self.shared.credits()
    }

    /// Replaces the fault probabilities (values outside [0, 1] are clamped).
    pub fn set_faults(&self, f: Faults) {
        let c = |p: f64| if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        self.shared.set_faults(Faults {
            http500: c(f.http500),
            reset: c(f.reset),
            slow: c(f.slow),
            e9006: c(f.e9006),
            e9009: c(f.e9009),
            charge_drop: c(f.charge_drop),
        });
    }

    /// Delays every upload answer from now on, before or after its charge (`None`: no delay).
    /// Test-only behaviour.
    pub fn stall_uploads(&self, stall: Option<Stall>) {
        self.shared.set_stall(stall);
    }

    /// Makes answers hostile from now on (`None`: honest again). Test-only behaviour.
    pub fn set_hostile(&self, h: Option<Hostile>) {
        self.shared.set_hostile(h);
    }

    pub fn hostile(&self) -> Option<Hostile> {
        self.shared.hostile()
    }

    /// Stops accepting, lets open requests finish (briefly), removes the temp dir.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(3), self.tasks.wait()).await;
        self.dir.remove();
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts the simulator; it runs until [`SimHandle::shutdown`] (or the handle is dropped).
pub async fn serve(opts: SimOptions) -> io::Result<SimHandle> {
    opts.faults
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    if let Some(h) = &opts.hostile {
        h.validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    }
    let listener = TcpListener::bind(opts.listen).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("sim: cannot listen on {}: {e}", opts.listen),
        )
    })?;
    let addr = listener.local_addr()?;
    let dir = WorkDir::create(opts.work_dir.clone())?;
    let mut url_addr = addr;
    if url_addr.ip().is_unspecified() {
        url_addr.set_ip(Ipv4Addr::LOCALHOST.into());
    }
    let shared = Arc::new(state::Shared::new(
        &opts,
        dir.path().to_path_buf(),
        format!("http://{url_addr}"),
    ));
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    tasks.spawn(sweep(shared.clone(), stop.clone()));
    shared.set_tarpit(hostile_answer::tarpit(stop.clone(), &tasks).await?);
    let app = routes::router(shared.clone());
    let accept = tokio::spawn(conn::accept_loop(
        listener,
        app,
        stop.clone(),
        tasks.clone(),
    ));
    tracing::info!(
        "sim: listening on {} (files in {})",
        shared.base_url,
        dir.path().display()
    );
    Ok(SimHandle {
        addr,
        shared,
        stop,
        accept: Some(accept),
        tasks,
        dir,
    })
}

/// Deletes expired results on a timer (requests also expire them on access).
/// The `[api]` lines a user pastes into hili.toml to use this simulator: its address and the
/// credentials it accepts. The secret is the simulator's own (it guards nothing real), so
/// unlike the service's it is shown.
pub fn credentials(base_url: &str, opts: &SimOptions) -> String {
    let quoted = |s: &str| toml::Value::String(s.to_string()).to_string();
    format!(
        "# the simulator accepts these credentials; paste into hili.toml to use it:\n\
         [api]\nbase_url = {}\nthird_code = {}\nsecret_key = {}\n",
        quoted(base_url),
        quoted(&opts.third_code),
        quoted(&opts.secret)
    )
}

async fn sweep(st: Arc<state::Shared>, stop: CancellationToken) {
    let period = (st.retention / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(period) => routes::expire(&st).await,
        }
    }
}

/// For `hili sim`: serves, prints the base URL as the first stdout line and then the
/// configuration lines that point hili at it, runs until `shutdown` is cancelled.
pub async fn run(args: SimArgs, shutdown: CancellationToken) -> io::Result<()> {
    let opts = args.into_options();
    let handle = serve(opts.clone()).await?;
    {
        let mut out = io::stdout().lock();
        writeln!(out, "{}", handle.base_url())?;
        out.write_all(credentials(&handle.base_url(), &opts).as_bytes())?;
        out.flush()?;
    }
    shutdown.cancelled().await;
    tracing::info!("sim: shutting down");
    handle.shutdown().await;
    Ok(())
}
