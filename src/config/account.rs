//! `[account]`: what a credit costs in the user's money, so `hili add --dry-run`, the run's
//! summary and `hili status` can say what the credits come to. Only shown, never sent: the
//! service counts credits, not money.

use serde::Deserialize;

/// The longest `currency` accepted: a symbol ("¥", "US$") or a code ("CNY").
const MAX_CURRENCY_CHARS: usize = 8;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountConfig {
    /// What one credit costs, in `currency`.
    pub credit_price: f64,
    /// How amounts are written: a symbol goes before the amount ("¥5.00"), a code of letters
    /// after it ("5.00 CNY").
    pub currency: String,
}

impl Default for AccountConfig {
    fn default() -> Self {
        AccountConfig {
            credit_price: 5.0,
            currency: "¥".into(),
        }
    }
}

impl AccountConfig {
    /// What `credits` cost, written in the configured currency: "¥25.00" or "25.00 CNY".
    pub fn cost(&self, credits: u64) -> String {
        self.amount(self.value(credits))
    }

    /// What `credits` cost, as a number rounded to the cent (for JSON).
    pub fn value(&self, credits: u64) -> f64 {
        (credits as f64 * self.credit_price * 100.0).round() / 100.0
    }

    /// `value` written in the configured currency, to the cent.
    pub fn amount(&self, value: f64) -> String {
        let c = &self.currency;
        match c.chars().any(char::is_alphabetic) {
            true => format!("{value:.2} {c}"),
            false => format!("{c}{value:.2}"),
        }
    }

    /// What is wrong with the section, if anything: (key, problem).
    pub(super) fn problem(&self) -> Option<(&'static str, String)> {
        let p = self.credit_price;
        if !(p.is_finite() && (0.0..=1e9).contains(&p)) {
            return Some((
                "account.credit_price",
                format!("{p} must be a price of 0 or more, e.g. 5.00"),
            ));
        }
        let c = self.currency.trim();
        let n = c.chars().count();
        if n == 0 || n > MAX_CURRENCY_CHARS || c.chars().any(char::is_control) {
            return Some((
                "account.currency",
                format!(
                    "{:?} must be a symbol or a code of 1 to {MAX_CURRENCY_CHARS} characters, \
                     e.g. \"¥\" or \"CNY\"",
                    self.currency
                ),
            ));
        }
        None
    }
}
