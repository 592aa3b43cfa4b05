//! The arithmetic of a closing reading: what `start − now − answered` says about the uploads
//! whose answers were lost, and the reason each lost job carries.

use crate::store::{EpochId, JobId, Verdict};

/// What a closing reading decided: the verdict for the lost uploads, and the credits the
/// account lost beyond what hili's uploads explain (at least this many).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub spent_elsewhere: u64,
    /// Credits the account gained meanwhile (a top-up), when no answer was lost.
    pub added: u64,
}

/// `start`: credits when the epoch opened; `now`: the closing reading, taken with nothing in
/// flight; `answered`: uploads answered in the epoch (each charged once); `lost`: uploads whose
/// answers were lost. `charged_lost = start − now − answered` is the number of lost uploads
/// the service charged — if nothing else moved the count. 0 → none: send them again. Equal to
/// `lost` → all: hold them. Anything else cannot be split among them: all are held, none is
/// sent again (never pay twice).
pub(crate) fn decide(start: u64, now: u64, answered: u64, lost: u64) -> Decision {
    let charged_lost = i128::from(start) - i128::from(now) - i128::from(answered);
    let lost_i = i128::from(lost);
    let clamp = |n: i128| u64::try_from(n.max(0)).unwrap_or(u64::MAX);
    let (verdict, spent_elsewhere, added) = match charged_lost {
        _ if lost == 0 => (Verdict::None, clamp(charged_lost), clamp(-charged_lost)),
        0 => (Verdict::Requeue, 0, 0),
        n if n == lost_i => (Verdict::Charged, 0, 0),
        n if n > lost_i => (Verdict::Ambiguous, clamp(n - lost_i), 0),
        _ => (Verdict::Ambiguous, 0, 0),
    };
    Decision {
        verdict,
        spent_elsewhere,
        added,
    }
}

/// The counts a reason quotes.
#[derive(Debug, Clone, Copy)]
pub struct Tally {
    pub epoch: EpochId,
    pub start: u64,
    pub now: u64,
    pub answered: u64,
    pub lost: u64,
}

/// The reason a lost job carries after `verdict`.
pub(crate) fn reason(verdict: Verdict, t: Tally, id: JobId) -> String {
    let Tally {
        epoch,
        start,
        now,
        answered,
        lost,
    } = t;
    let counts = format!(
        "credit epoch {epoch}: {start} credits when it opened, {answered} upload(s) answered, \
         {lost} answer(s) lost, {now} credits now"
    );
    let reupload = format!("`hili retry --reupload {id}` uploads it again (spends a credit)");
    match verdict {
        Verdict::Requeue | Verdict::None => format!(
            "the upload got no answer; the credit count shows it was not charged ({counts}): \
             uploading again"
        ),
        Verdict::Charged => format!(
            "charged, result unknown: the upload got no answer and the credit count shows it was \
             charged ({counts}); the result cannot be fetched without the service's answer. \
             {reupload}"
        ),
        Verdict::Ambiguous => format!(
            "perhaps charged, result unknown: the upload got no answer and the credit count \
             cannot say which of the lost uploads were charged, or something else spent or \
             added credits meanwhile ({counts}). {reupload}; check the service's records first"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_decides_only_when_it_can_be_split() {
        // 10 at the start, 3 answered: 7 expected if the lost one was free.
        assert_eq!(decide(10, 7, 3, 1).verdict, Verdict::Requeue);
        assert_eq!(decide(10, 6, 3, 1).verdict, Verdict::Charged);
        assert_eq!(decide(10, 5, 3, 2).verdict, Verdict::Charged);
        assert_eq!(decide(10, 6, 3, 2).verdict, Verdict::Ambiguous, "1 of 2");
        let more = decide(10, 4, 3, 1);
        assert_eq!(
            (more.verdict, more.spent_elsewhere),
            (Verdict::Ambiguous, 2)
        );
        assert_eq!(
            decide(10, 9, 3, 1).verdict,
            Verdict::Ambiguous,
            "credits added"
        );
    }

    #[test]
    fn without_a_lost_answer_the_difference_is_spending_elsewhere_or_a_top_up() {
        assert_eq!(
            decide(10, 7, 3, 0),
            Decision {
                verdict: Verdict::None,
                spent_elsewhere: 0,
                added: 0
            }
        );
        assert_eq!(decide(10, 5, 3, 0).spent_elsewhere, 2);
        assert_eq!(decide(10, 107, 3, 0).added, 100);
    }
}
