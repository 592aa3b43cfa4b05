//! The simulator's books: every charge, which (content, repair type, colour) keys were
//! charged before (so a wasted credit shows as a duplicate), the injected faults by kind and
//! the upload requests that reached the handler, and every API call by endpoint and time. [`super::Shared`] keeps them under its one
//! lock; this file only knows how to record and how to show them as the [`Ledger`] served at
//! `GET /__sim/ledger`.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

/// The names under which faults are counted in the ledger, in roll order.
pub(crate) const FAULT_KINDS: [&str; 6] =
    ["reset", "http500", "slow", "e9006", "e9009", "charge_drop"];

/// One charged upload.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    pub mdf: String,
    /// SHA-256 (hex) of the uploaded bytes.
    pub sha256: String,
    /// The wire value, e.g. `sr,repair`.
    pub repair_type: String,
    pub rgb: Option<String>,
    /// Unix seconds on the sim's clock.
    pub time: i64,
}

/// What the sim charged and injected: served at `GET /__sim/ledger`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Ledger {
    pub charges: Vec<Charge>,
    pub total_charges: u64,
    /// Charges whose (sha256, repair_type, rgb) had been charged before: wasted credits.
    pub duplicate_charges: u64,
    pub credits_left: u64,
    /// Injected faults by kind (`reset`, `http500`, `slow`, `e9006`, `e9009`, `charge_drop`).
    pub faults: BTreeMap<String, u64>,
    /// Upload requests that reached the upload handler, charged or not (faults that reset or
    /// answer 500 before the handler are not counted): "was this file ever sent?".
    #[serde(default)]
    pub upload_requests: u64,
    /// API calls by endpoint (`upload`, `status`, `download`, `nums`), counted on arrival,
    /// faulted or not: what an account's request rate is spent on.
    #[serde(default)]
    pub api_calls: BTreeMap<String, u64>,
    /// When each API call arrived, in milliseconds since the simulator started, in order: a
    /// test checks a rate limit against it.
    #[serde(default)]
    pub api_call_ms: Vec<u64>,
}

impl Ledger {
    /// The most API calls that arrived within any one second.
    pub fn peak_calls_per_second(&self) -> usize {
        let t = &self.api_call_ms;
        let mut first = 0;
        let mut peak = 0;
        for (i, &at) in t.iter().enumerate() {
            while at - t[first] >= 1000 {
                first += 1;
            }
            peak = peak.max(i + 1 - first);
        }
        peak
    }

    /// All API calls.
    pub fn total_api_calls(&self) -> u64 {
        self.api_calls.values().sum()
    }
}

/// The running totals behind a [`Ledger`].
pub(super) struct Books {
    charges: Vec<Charge>,
    charged_keys: HashSet<(String, String, Option<String>)>,
    duplicate_charges: u64,
    fault_counts: BTreeMap<String, u64>,
    upload_requests: u64,
    api_calls: BTreeMap<String, u64>,
    api_call_ms: Vec<u64>,
}

impl Books {
    /// Empty books, with every fault kind listed at zero (so the ledger always names them).
    pub(super) fn new() -> Books {
        Books {
            charges: Vec::new(),
            charged_keys: HashSet::new(),
            duplicate_charges: 0,
            fault_counts: FAULT_KINDS.iter().map(|k| (k.to_string(), 0)).collect(),
            upload_requests: 0,
            api_calls: BTreeMap::new(),
            api_call_ms: Vec::new(),
        }
    }

    /// Records a charge, counting it as a duplicate if its key was charged before.
    pub(super) fn record(&mut self, charge: Charge) {
        let key = (
            charge.sha256.clone(),
            charge.repair_type.clone(),
            charge.rgb.clone(),
        );
        if !self.charged_keys.insert(key) {
            self.duplicate_charges += 1;
        }
        self.charges.push(charge);
    }

    /// Counts one fault (or hostile answer) under `kind`.
    pub(super) fn count_fault(&mut self, kind: String) {
        *self.fault_counts.entry(kind).or_insert(0) += 1;
    }

    /// Counts one API call to `endpoint`, arrived `at_ms` after the start.
    pub(super) fn note_api_call(&mut self, endpoint: &str, at_ms: u64) {
        *self.api_calls.entry(endpoint.to_string()).or_insert(0) += 1;
        self.api_call_ms.push(at_ms);
    }

    pub(super) fn note_upload_request(&mut self) {
        self.upload_requests += 1;
    }

    /// The books as served, with the credits left.
    pub(super) fn ledger(&self, credits_left: u64) -> Ledger {
        Ledger {
            charges: self.charges.clone(),
            total_charges: self.charges.len() as u64,
            duplicate_charges: self.duplicate_charges,
            credits_left,
            faults: self.fault_counts.clone(),
            upload_requests: self.upload_requests,
            api_calls: self.api_calls.clone(),
            api_call_ms: self.api_call_ms.clone(),
        }
    }
}
