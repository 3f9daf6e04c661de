//! Payouts: money sent to a WeChat user's balance (WeChat's merchant transfer), which the payee
//! confirms inside WeChat. The state machine that WeChat's reports drive, and what each final
//! state does to the ledger.

use serde::{Deserialize, Serialize};

use crate::ledger::PostingKind;

/// How long the payee has to confirm, after which WeChat fails the transfer (`OVERDUE_CLOSE`).
pub const CONFIRMATION_WINDOW_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PayoutStatus {
    /// Written, its amount reserved; being sent to WeChat (or waiting to be sent again).
    #[default]
    Pending,
    /// WeChat took it; the payee must confirm it inside WeChat.
    AwaitingConfirmation,
    /// The payee confirmed (or no confirmation was needed); WeChat is moving the money.
    Processing,
    /// The money is in the payee's WeChat balance.
    Succeeded,
    /// WeChat failed it (declined by the payee, not confirmed in time, refused); the reserved
    /// amount is released.
    Failed,
    /// Cancelled before the payee confirmed; the reserved amount is released.
    Cancelled,
}

try_from_string!(PayoutStatus, "payout status");

impl std::fmt::Display for PayoutStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PayoutStatus {
    pub const ALL: [PayoutStatus; 6] = [
        Self::Pending,
        Self::AwaitingConfirmation,
        Self::Processing,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::AwaitingConfirmation => "awaiting_confirmation",
            Self::Processing => "processing",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// The merchant-facing event a move to this status emits.
    pub fn event_type(self) -> Option<&'static str> {
        match self {
            Self::Pending | Self::Processing => None,
            Self::AwaitingConfirmation => Some("payout.awaiting_confirmation"),
            Self::Succeeded => Some("payout.succeeded"),
            Self::Failed => Some("payout.failed"),
            Self::Cancelled => Some("payout.cancelled"),
        }
    }

    /// The ledger posting a move to this status makes: the reserved amount leaves on success
    /// and is released on failure or cancellation.
    pub fn posting(self) -> Option<PostingKind> {
        match self {
            Self::Succeeded => Some(PostingKind::Payout),
            Self::Failed | Self::Cancelled => Some(PostingKind::PayoutRelease),
            _ => None,
        }
    }

    /// Whether the merchant may cancel it: until the payee has confirmed.
    pub fn can_cancel(self) -> bool {
        matches!(self, Self::Pending | Self::AwaitingConfirmation)
    }
}

/// What WeChat reports about a transfer (its `state`), in the gateway's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayoutEvent {
    /// ACCEPTED: taken, not yet offered to the payee.
    Accepted,
    /// WAIT_USER_CONFIRM
    AwaitingConfirmation,
    /// PROCESSING or TRANSFERING
    Processing,
    /// SUCCESS
    Succeeded,
    /// FAIL
    Failed,
    /// CANCELLED
    Cancelled,
}

impl PayoutEvent {
    pub const ALL: [PayoutEvent; 6] = [
        Self::Accepted,
        Self::AwaitingConfirmation,
        Self::Processing,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The status this report names.
    pub fn status(self) -> PayoutStatus {
        match self {
            Self::Accepted => PayoutStatus::Pending,
            Self::AwaitingConfirmation => PayoutStatus::AwaitingConfirmation,
            Self::Processing => PayoutStatus::Processing,
            Self::Succeeded => PayoutStatus::Succeeded,
            Self::Failed => PayoutStatus::Failed,
            Self::Cancelled => PayoutStatus::Cancelled,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayoutTransition {
    To(PayoutStatus),
    Unchanged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from} payout cannot take {event:?}")]
pub struct PayoutTransitionError {
    pub from: PayoutStatus,
    pub event: PayoutEvent,
}

/// The payout state machine. It only moves forward (pending → awaiting confirmation →
/// processing → a final state); a report of an earlier stage (a late answer, a query that
/// crossed a notification) changes nothing. A final state never changes: a report of another
/// final state is an error, for a person to look at.
pub fn apply(
    from: PayoutStatus,
    event: PayoutEvent,
) -> Result<PayoutTransition, PayoutTransitionError> {
    let to = event.status();
    if from == to {
        return Ok(PayoutTransition::Unchanged);
    }
    if from.is_final() {
        return if to.is_final() {
            Err(PayoutTransitionError { from, event })
        } else {
            Ok(PayoutTransition::Unchanged)
        };
    }
    if !to.is_final() && stage(to) < stage(from) {
        return Ok(PayoutTransition::Unchanged);
    }
    Ok(PayoutTransition::To(to))
}

fn stage(s: PayoutStatus) -> u8 {
    match s {
        PayoutStatus::Pending => 0,
        PayoutStatus::AwaitingConfirmation => 1,
        PayoutStatus::Processing => 2,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payout_state_machine_table() {
        use PayoutEvent as E;
        use PayoutStatus as S;
        use PayoutTransition::{To, Unchanged};
        for from in S::ALL {
            for event in E::ALL {
                let got = apply(from, event).ok();
                let to = event.status();
                let expected = if from == to {
                    Some(Unchanged)
                } else if from.is_final() && to.is_final() {
                    None
                } else if from.is_final() || (!to.is_final() && stage(to) < stage(from)) {
                    Some(Unchanged)
                } else {
                    Some(To(to))
                };
                assert_eq!(got, expected, "{from} × {event:?}");
            }
        }
        // The main paths, spelled out.
        assert_eq!(
            apply(S::Pending, E::AwaitingConfirmation),
            Ok(To(S::AwaitingConfirmation))
        );
        assert_eq!(
            apply(S::AwaitingConfirmation, E::Succeeded),
            Ok(To(S::Succeeded))
        );
        assert_eq!(apply(S::Processing, E::AwaitingConfirmation), Ok(Unchanged));
        assert_eq!(apply(S::Succeeded, E::Processing), Ok(Unchanged));
        assert!(apply(S::Succeeded, E::Failed).is_err());
        assert_eq!(apply(S::Pending, E::Accepted), Ok(Unchanged));
    }

    #[test]
    fn statuses_events_and_postings() {
        for s in PayoutStatus::ALL {
            assert_eq!(PayoutStatus::parse(s.as_str()), Some(s));
            assert_eq!(s.posting().is_some(), s.is_final());
        }
        assert_eq!(PayoutStatus::Succeeded.posting(), Some(PostingKind::Payout));
        assert!(PayoutStatus::AwaitingConfirmation.can_cancel());
        assert!(!PayoutStatus::Processing.can_cancel());
        assert_eq!(PayoutStatus::Processing.event_type(), None);
    }
}
