//! Money in the user's terms, for the commands that show it: what credits cost
//! (`[account] credit_price` and `currency`), whether the credits left cover a dry run, the
//! run's spend (`hili run` prints [`print_spent`] after its summary), the budget a run starts
//! with (`--budget N`), and the money and daily-budget lines of `hili status`.

use std::time::Duration;

use serde_json::{Value, json};

use super::args::RunArgs;
use crate::config::{AccountConfig, Config};
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
    let api = match super::client::client(config) {
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
        "total": a.value(credits),
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
    account: AccountConfig,
}

impl MoneyStatus {
    pub(super) async fn read(config: &Config, store: &Store) -> anyhow::Result<MoneyStatus> {
        Ok(MoneyStatus {
            spent: store.credits_spent().await?,
            left: store.latest_credits().await?.map(|c| c.1),
            today: store
                .charged_since(crate::pipeline::control::today_began_ms())
                .await?,
            per_day: config.queue.budget_per_day,
            account: config.account.clone(),
        })
    }

    /// Two lines for people.
    pub(super) fn lines(&self) -> Vec<String> {
        let a = &self.account;
        let price = a.amount(a.credit_price);
        let spent = format!(
            "money: {} credit(s) spent, about {}",
            self.spent,
            a.cost(self.spent)
        );
        let money = match self.left {
            Some(n) => format!(
                "{spent}; {n} left, about {} (at {price} a credit)",
                a.cost(n)
            ),
            None => format!("{spent} (at {price} a credit)"),
        };
        let today = format!(
            "today: {} credit(s) spent since local midnight, about {}",
            self.today,
            a.cost(self.today)
        );
        let today = match self.per_day {
            0 => today,
            n if self.today >= n => format!(
                "{today}: the daily budget of {n} ([queue] budget_per_day) is reached, uploads \
                 wait for midnight"
            ),
            n => format!("{today}, of a daily budget of {n} ([queue] budget_per_day)"),
        };
        vec![money, today]
    }

    /// The same for programs: amounts as numbers, in `currency`.
    pub(super) fn json(&self) -> Value {
        let a = &self.account;
        let value = |n: u64| a.value(n);
        json!({
            "credit_price": a.credit_price,
            "currency": a.currency,
            "spent": value(self.spent),
            "left": self.left.map(value),
            "spent_today_credits": self.today,
            "spent_today": value(self.today),
            "budget_per_day": (self.per_day > 0).then_some(self.per_day),
        })
    }
}
