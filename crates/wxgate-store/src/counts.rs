//! Payments by status and integration, kept in `payment_counts` by the same transactions that
//! insert and move payments, so reading them costs a few rows however many payments there are.
//! A count is spread over `COUNT_SLOTS` rows, the slot chosen by the payment's id, so that
//! concurrent PostgreSQL transactions seldom wait on each other's row; a count is the sum of
//! its slots (one slot may go below zero when a payment counted in it moves on).

use wxgate_domain::PaymentStatus;

use crate::PaymentRow;
use crate::batch::{Batch, Insert, Value};

/// How many rows each (status, integration) count is spread over.
const COUNT_SLOTS: i64 = 16;

/// What makes an insert into `payment_counts` add to the counts its rows name.
macro_rules! add_on_conflict {
    () => {
        " ON CONFLICT (status, integration, slot) DO UPDATE SET n = payment_counts.n + excluded.n"
    };
}

/// The move of one payment: its old status's count less one, its new one's more one.
const MOVE_SQL: &str = concat!(
    "INSERT INTO payment_counts (status, integration, slot, n) \
     VALUES ($1, $3, $4, $2), ($5, $3, $4, $6)",
    add_on_conflict!()
);

/// The counts, summed over their slots: (status, integration, count), ordered, none zero.
pub(crate) const COUNTS_SQL: &str = "SELECT status, integration, CAST(SUM(n) AS BIGINT) \
     FROM payment_counts GROUP BY status, integration HAVING SUM(n) <> 0 \
     ORDER BY status, integration";

/// The slot of `payment_id`'s counts: random ids spread evenly.
fn slot(payment_id: &str) -> i64 {
    payment_id.bytes().map(i64::from).sum::<i64>() % COUNT_SLOTS
}

/// Adds to `batch` the count of the new payment `p`, if `condition` (its `$0` standing for
/// `value`) holds after the batch's first statement: the one that inserts `p`.
pub(crate) fn count_new(batch: &mut Batch, p: &PaymentRow, condition: &str, value: Value) {
    let row = Insert {
        into: "payment_counts (status, integration, slot, n)",
        values: vec![
            p.status.as_str().into(),
            p.integration.as_str().into(),
            slot(&p.id).into(),
            1.into(),
        ],
    };
    batch.upsert_when(row, add_on_conflict!(), condition, value);
}

/// Adds to `batch` the move of `current` (as it was read, and as the batch's transaction has
/// just changed it) to `to`. Its two rows are written in one order, by status, in every
/// transaction, so two transactions never each hold a row the other waits for. That rests on
/// a PostgreSQL transaction moving one payment at most (group commit is SQLite's, whose one
/// writer waits on nobody); one that moved several would need all its rows in one sorted
/// statement.
pub(crate) fn count_move(batch: &mut Batch, current: &PaymentRow, to: PaymentStatus) {
    let from = current.status;
    if from == to {
        return;
    }
    let (first, second) = if from.as_str() < to.as_str() {
        ((from, -1), (to, 1))
    } else {
        ((to, 1), (from, -1))
    };
    batch.push(
        MOVE_SQL,
        vec![
            first.0.as_str().into(),
            first.1.into(),
            current.integration.as_str().into(),
            slot(&current.id).into(),
            second.0.as_str().into(),
            second.1.into(),
        ],
    );
}
