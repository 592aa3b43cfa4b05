//! The `hili sim` command line, turned into [`SimOptions`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{Faults, SimOptions};
use crate::secret::Secret;

/// Run an offline simulator of the Hili API (for tests, demos and benchmarks).
///
/// Listens on loopback by default; binding another address exposes a fake paid service
/// to the network, which is allowed but rarely what you want.
#[derive(clap::Args, Debug)]
pub struct SimArgs {
    /// Address to listen on (port 0 picks a free port; the bound URL is printed first).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The customer identifier the sim accepts.
    #[arg(long, default_value = "demo")]
    pub third_code: String,
    /// The secret key tokens must be built from.
    #[arg(long, env = "HILI_SIM_SECRET", hide_env_values = true, default_value = "demo-secret", value_parser = parse_secret)]
    pub secret: Secret,
    /// Uploads the customer may still make.
    #[arg(long, default_value_t = 100)]
    pub credits: u64,
    /// How long a job stays "processing" (status 100): one duration ("3s"), or a range
    /// ("2s..12s") each upload's time is drawn from (seeded by --seed).
    #[arg(long, default_value = "3s", value_parser = parse_processing)]
    pub processing: (Duration, Option<Duration>),
    /// How long a result stays downloadable after processing.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub retention: Duration,
    /// Seed of the random streams (mdf values, fault rolls).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Probability (0-1) of answering an HTML page with HTTP 500.
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
    pub fault_http500: f64,
    /// Probability (0-1) of resetting the connection before answering.
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
    pub fault_reset: f64,
    /// Probability (0-1) of delaying an answer by --latency.
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
    pub fault_slow: f64,
    /// Delay of a "slow" answer.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub latency: Duration,
    /// Probability (0-1) that an upload fails with errno 9006 (not charged).
    #[arg(long = "fault-9006", default_value_t = 0.0, value_parser = parse_probability)]
    pub fault_9006: f64,
    /// Probability (0-1) that an upload fails with errno 9009 (not charged).
    #[arg(long = "fault-9009", default_value_t = 0.0, value_parser = parse_probability)]
    pub fault_9009: f64,
    /// Probability (0-1) that an upload is charged and then the connection dropped unanswered.
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
    pub fault_charge_drop: f64,
    /// Seconds added to the sim's clock (negative: behind real time), e.g. -300.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub clock_offset: i64,
    /// Return the uploaded bytes unchanged as the result (benchmarks).
    #[arg(long)]
    pub passthrough: bool,
    /// Where uploads and results are kept (default: a temp dir removed at exit).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

fn parse_secret(s: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(s))
}

/// "3s" or "2s..12s" (the shortest and the longest).
fn parse_processing(s: &str) -> Result<(Duration, Option<Duration>), String> {
    let parse = |d: &str| {
        humantime::parse_duration(d.trim())
            .map_err(|e| format!("{d:?} is not a duration ({e}); write e.g. 3s or 2s..12s"))
    };
    match s.split_once("..") {
        None => Ok((parse(s)?, None)),
        Some((lo, hi)) => {
            let (lo, hi) = (parse(lo)?, parse(hi)?);
            if hi < lo {
                return Err(format!(
                    "{s:?}: the range's end is before its start; write e.g. 2s..12s"
                ));
            }
            Ok((lo, Some(hi)))
        }
    }
}

fn parse_probability(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!(
            "{s:?} is not a probability: give a number from 0 to 1, e.g. 0.05"
        )),
    }
}

impl SimArgs {
    pub fn into_options(self) -> SimOptions {
        SimOptions {
            listen: self.listen,
            third_code: self.third_code,
            secret: self.secret.expose().to_string(),
            credits: self.credits,
            processing: self.processing.0,
            processing_up_to: self.processing.1,
            retention: self.retention,
            seed: self.seed,
            faults: Faults {
                http500: self.fault_http500,
                reset: self.fault_reset,
                slow: self.fault_slow,
                e9006: self.fault_9006,
                e9009: self.fault_9009,
                charge_drop: self.fault_charge_drop,
            },
            latency: self.latency,
            clock_offset_secs: self.clock_offset,
            passthrough: self.passthrough,
            work_dir: self.work_dir,
            hostile: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn defaults_and_flags() {
        let o = Cli::parse_from(["x"]).sim.into_options();
        assert_eq!(o.processing, Duration::from_secs(3));
        assert_eq!(o.retention, Duration::from_secs(3600));
        assert_eq!(o.third_code, "demo");
        assert!(o.listen.ip().is_loopback());
        let a = Cli::parse_from([
            "x",
            "--clock-offset",
            "-300",
            "--fault-9006",
            "0.5",
            "--processing",
            "200ms",
            "--secret",
            "shh",
        ])
        .sim;
        assert!(!format!("{a:?}").contains("shh"));
        let o = a.into_options();
        assert_eq!((o.clock_offset_secs, o.faults.e9006), (-300, 0.5));
        assert_eq!(o.processing, Duration::from_millis(200));
        assert!(Cli::try_parse_from(["x", "--fault-reset", "1.5"]).is_err());
        let o = Cli::parse_from(["x", "--processing", "2s..12s"])
            .sim
            .into_options();
        let range = (o.processing, o.processing_up_to);
        assert_eq!(
            range,
            (Duration::from_secs(2), Some(Duration::from_secs(12)))
        );
        assert!(Cli::try_parse_from(["x", "--processing", "5s..1s"]).is_err());
    }
}
