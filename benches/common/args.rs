//! What every queue bench reads at its start: its size from the command line or the
//! environment, and how busy the machine was. Benches take this file with
//! `#[path = "common/args.rs"] mod args;`.

/// `env`'s value as a number, else `default`.
pub(crate) fn arg_or_env(env: &str, default: usize) -> usize {
    std::env::var(env)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// How many jobs: `cargo bench` passes `--bench`; the first bare number is N, else
/// `HILI_BENCH_JOBS`, else 1000.
pub(crate) fn jobs() -> usize {
    std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or_else(|| arg_or_env("HILI_BENCH_JOBS", 1000))
}

/// Other work on a shared machine moves the figures: say how busy it was.
pub(crate) fn say_load() {
    if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average at start: {}", l.trim());
    }
}
