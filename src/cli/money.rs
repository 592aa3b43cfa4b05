//! Money in the user's terms, for the commands that show it: what credits cost
//! (`[account] credit_price` and `currency`), whether the credits left cover a dry run, the
//! run's spend (`hili run` prints [`print_spent`] after its summary), the budget a run starts
//! with (`--budget N`), and the money and daily-budget lines of `hili status`.

use std::time::Duration;

use serde_json::{Value, json};

use super::args::RunArgs;
use crate::config::Config;
use crate::pipeline::Settings;
use crate::store::Store;

/// The longest a dry run waits for the service to say how many credits are left.
const ASK_LIMIT: Duration = Duration::from_secs(10);

/// The credits left on the account, as a dry run could learn them.
#[derive(Debug)]
pub(super) enum CreditsLeft {
    /// The service said.
    Known(u64),
    /// Asked, without an answer: why.
    Unreachable(String),
    /// Not asked: the configuration has no account to ask about (why).
    NotConfigured(String),
}

/// Asks the service for the credits left, when the configuration names an account.
pub(super) async fn credits_left(config: &Config) -> CreditsLeft {
    let api = match super::run::client(config) {
        Ok(api) => api,
        Err(e) => return CreditsLeft::NotConfigured(e.to_string()),
    };
    let limit = config.api.timeout.min(ASK_LIMIT);
    match tokio::time::timeout(limit, api.credits()).await {
        Ok(Ok(n)) => CreditsLeft::Known(n),
        Ok(Err(e)) => CreditsLeft::Unreachable(e.to_string()),
        Err(_) => CreditsLeft::Unreachable(format!("no answer within {limit:?}")),
    }
}

/// Whether the credits left cover `needed` credits, said in one line.
pub(super) fn covers_line(config: &Config, needed: u64, left: &CreditsLeft) -> String {
    let a = &config.account;
    match left {
        CreditsLeft::Known(n) if *n >= needed => format!(
            "credits left: {n} (about {}): enough for this run; {} left after it",
            a.cost(*n),
            n - needed
        ),
        CreditsLeft::Known(n) => format!(
            "credits left: {n}: NOT enough for this run, {short} credit(s) short (about {}): \
             buy more, or hili uploads {n} and pauses the rest until credits are added",
            a.cost(needed - n),
            short = needed - n
        ),
        CreditsLeft::Unreachable(why) => format!(
            "credits left: unknown, the service could not be asked ({why}); the estimate \
             above stands: check with `hili credits` or `hili doctor`"
        ),
        CreditsLeft::NotConfigured(why) => format!(
            "credits left: not asked, no account is configured ({why}); the estimate above \
             stands"
        ),
    }
}

/// The price of `credits` as JSON: per credit, currency, total and the text shown.
pub(super) fn cost_json(config: &Config, credits: u64) -> Value {
    let a = &config.account;
    json!({
        "credit_price": a.credit_price,
        "currency": a.currency,
        "total": (credits as f64 * a.credit_price * 100.0).round() / 100.0,
        "text": a.cost(credits),
    })
}

/// The credits left as JSON, and whether they cover `needed` (null when unknown).
pub(super) fn left_json(left: &CreditsLeft, needed: u64) -> Value {
    match left {
        CreditsLeft::Known(n) => json!({"asked": true, "left": n, "covers": *n >= needed}),
        CreditsLeft::Unreachable(why) => {
            json!({"asked": true, "left": null, "covers": null, "error": why})
        }
        CreditsLeft::NotConfigured(why) => {
            json!({"asked": false, "left": null, "covers": null, "error": why})
        }
    }
}

/// The money line after a run's summary, when it spent credits.
pub(super) fn print_spent(config: &Config, credits: u64) {
    if credits > 0 {
        println!(
            "spent: {credits} credit(s), about {} at {} a credit",
            config.account.cost(credits),
            config.account.amount(config.account.credit_price)
        );
    }
}

/// The run's settings: the configuration's, with `--budget N` for this run in place of
/// `[queue] budget`.
pub(super) fn run_settings(config: &Config, args: &RunArgs) -> Settings {
    let mut s = Settings::from_config(config);
    if let Some(n) = args.budget {
        s.budget = n;
    }
    s
}

/// What `hili status` says about money: the credits spent and left in money, and the day's
/// spend against `[queue] budget_per_day`.
pub(super) struct MoneyStatus {
    spent: u64,
    left: Option<u64>,
    today: u64,
    per_day: u64,
    price: String,
    cost: Vec<String>,
}

impl MoneyStatus {
    pub(super) async fn read(config: &Config, store: &Store) -> anyhow::Result<MoneyStatus> {
        let spent = store.credits_spent().await?;
        let left = store.latest_credits().await?.map(|c| c.1);
        let today = store
            .charged_since(crate::pipeline::control::today_began_ms())
            .await?;
        let a = &config.account;
        Ok(MoneyStatus {
            spent,
            left,
            today,
            per_day: config.queue.budget_per_day,
            price: a.amount(a.credit_price),
            cost: [Some(spent), left, Some(today)]
                .into_iter()
                .map(|n| a.cost(n.unwrap_or(0)))
                .collect(),
        })
    }

    /// One or two lines for people.
    pub(super) fn lines(&self) -> Vec<String> {
        let mut v = vec![match self.left {
            Some(n) => format!(
                "money: {} credit(s) spent, about {}; {n} left, about {} (at {} a credit)",
                self.spent, self.cost[0], self.cost[1], self.price
            ),
            None => format!(
                "money: {} credit(s) spent, about {} (at {} a credit)",
                self.spent, self.cost[0], self.price
            ),
        }];
        let today = format!(
            "today: {} credit(s) spent since local midnight, about {}",
            self.today, self.cost[2]
        );
        v.push(match self.per_day {
            0 => today,
            n if self.today >= n => format!(
                "{today}: the daily budget of {n} ([queue] budget_per_day) is reached, uploads \
                 wait for midnight"
            ),
            n => format!("{today}, of a daily budget of {n} ([queue] budget_per_day)"),
        });
        v
    }

    /// The same for programs.
    pub(super) fn json(&self) -> Value {
        json!({
            "credit_price": self.price,
            "spent": self.cost[0],
            "left": self.left.map(|_| &self.cost[1]),
            "spent_today_credits": self.today,
            "spent_today": self.cost[2],
            "budget_per_day": (self.per_day > 0).then_some(self.per_day),
        })
    }
}
