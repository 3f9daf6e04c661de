//! Payment attempts: the WeChat orders made for one payment. The first has the payment's id as
//! its out_trade_no; later ones (another device in the hosted checkout, a fresh credential
//! after the old one expired) have `{payment id}_{n}`. The payment row carries its current
//! attempt's out_trade_no and credential, so every path that reads the payment alone still
//! sees the order that matters.

use wxgate_domain::Integration;
use wxgate_domain::payment::{ATTEMPTS_PER_PAYMENT_MAX, AttemptStatus, attempt_out_trade_no};

use crate::batch::{Batch, Value};
use crate::outbox::push_event;
use crate::payments::insert_attempt;
use crate::{
    AttemptStart, EventRow, PaymentAttemptRow, PaymentRow, RefundRow, Result, Store, StoreError,
};

/// An attempt's credential, by the attempt's primary key (`$3` its merchant), while the attempt
/// is open (an ended payment's attempts are closed in the transaction that ends it).
/// The sweep's read of payments with orders left open (see
/// [`Store::payments_with_orders_left_open`]): driven by the index of open attempts.
pub(crate) const LEFT_OPEN_SQL: &str = "SELECT * FROM payments WHERE id IN \
     (SELECT payment_id FROM payment_attempts WHERE status = 'open' AND transaction_id IS NULL) \
     AND status <> 'pending' AND updated_at < $1 \
     AND (updated_at > $2 OR (updated_at = $2 AND id > $3)) AND id NOT IN \
     (SELECT payment_id FROM quarantined_callbacks WHERE payment_id IS NOT NULL) \
     ORDER BY updated_at, id LIMIT $4";

pub(crate) const ATTEMPT_CREDENTIAL_SQL: &str = "UPDATE payment_attempts SET wechat_credential = $1, \
     updated_at = $2 WHERE merchant_id = $3 AND out_trade_no = $4 AND status = 'open'";

/// A payment's credential (`$3` its id) while `$4` is its current order and still open (`$5`
/// its merchant). Its status is not asked directly: on a new PostgreSQL table the planner would
/// keep the pending payments' partial index for `status = 'pending'`.
pub(crate) const PAYMENT_CREDENTIAL_SQL: &str = "UPDATE payments SET wechat_credential = $1, \
     updated_at = $2 WHERE id = $3 AND out_trade_no = $4 AND EXISTS (SELECT 1 FROM \
     payment_attempts WHERE merchant_id = $5 AND out_trade_no = $4 AND status = 'open')";

impl Store {
    /// Starts a new attempt of a pending payment with `integration` and makes it the current
    /// one, in one transaction, its status sync due by `sync_by` at the latest (an order at
    /// WeChat is something to ask about). Concurrent starts get distinct out_trade_nos.
    pub async fn start_attempt(
        &self,
        p: &PaymentRow,
        integration: Integration,
        now: i64,
        sync_by: i64,
    ) -> Result<AttemptStart> {
        for _ in 0..4 {
            let mut writing = self.write().await?;
            let mut tx = writing.begin().await?;
            let (count,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM payment_attempts WHERE payment_id = $1")
                    .bind(&p.id)
                    .fetch_one(&mut *tx)
                    .await?;
            if count >= ATTEMPTS_PER_PAYMENT_MAX {
                tx.rollback().await?;
                return Ok(AttemptStart::TooMany);
            }
            let seq = count + 1;
            let row = PaymentAttemptRow {
                merchant_id: p.merchant_id.clone(),
                out_trade_no: attempt_out_trade_no(&p.id, seq),
                payment_id: p.id.clone(),
                seq,
                integration,
                status: AttemptStatus::Open,
                wechat_credential: None,
                transaction_id: None,
                created_at: now,
                updated_at: now,
            };
            let inserted = insert_attempt(&mut tx, &row).await;
            if let Err(StoreError::Database(sqlx::Error::Database(e))) = &inserted
                && e.is_unique_violation()
            {
                // Another start took this number first: count again.
                tx.rollback().await?;
                continue;
            }
            inserted?;
            let current = sqlx::query(
                "UPDATE payments SET out_trade_no = $1, wechat_credential = NULL, checkout_kind = $2, \
                 updated_at = $3, sync_due_at = CASE WHEN sync_due_at IS NULL OR sync_due_at > $5 \
                 THEN $5 ELSE sync_due_at END WHERE id = $4 AND status = 'pending'",
            )
            .bind(&row.out_trade_no)
            .bind(integration.as_str())
            .bind(now)
            .bind(&p.id)
            .bind(sync_by)
            .execute(&mut *tx)
            .await?;
            if current.rows_affected() == 0 {
                tx.rollback().await?;
                return Ok(AttemptStart::NotPending);
            }
            tx.commit().await?;
            return Ok(AttemptStart::Started(Box::new(row)));
        }
        Err(StoreError::Corrupt(format!(
            "payment {} kept starting attempts concurrently",
            p.id
        )))
    }

    /// A payment's attempts, oldest first.
    pub async fn payment_attempts(&self, payment_id: &str) -> Result<Vec<PaymentAttemptRow>> {
        self.read_rows(
            "SELECT * FROM payment_attempts WHERE payment_id = $1 ORDER BY seq",
            [payment_id],
        )
        .await
    }

    /// Payments no longer pending that keep an open WeChat order (a paid payment's other
    /// order whose close failed or never ran), unchanged since `before`, in (updated_at, id)
    /// order after `after`. A payment with a quarantined report waits for a person instead.
    pub async fn payments_with_orders_left_open(
        &self,
        before: i64,
        after: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<PaymentRow>> {
        let (after_at, after_id) = after.unwrap_or((i64::MIN, ""));
        Ok(sqlx::query_as::<_, PaymentRow>(LEFT_OPEN_SQL)
            .bind(before)
            .bind(after_at)
            .bind(after_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The attempt with this out_trade_no, and its payment.
    pub async fn payment_attempt(
        &self,
        merchant_id: &str,
        out_trade_no: &str,
    ) -> Result<Option<(PaymentAttemptRow, PaymentRow)>> {
        let attempt = self
            .read_rows::<Vec<PaymentAttemptRow>, 2>(
                "SELECT * FROM payment_attempts WHERE merchant_id = $1 AND out_trade_no = $2",
                [merchant_id, out_trade_no],
            )
            .await?
            .pop();
        let Some(attempt) = attempt else {
            return Ok(None);
        };
        let payment = self
            .payment(merchant_id, &attempt.payment_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("attempt {out_trade_no} has no payment")))?;
        Ok(Some((attempt, payment)))
    }

    /// Records what WeChat answered to an attempt's prepay (the attempt `out_trade_no` of
    /// payment `payment_id`); it is also the payment's credential while the attempt is the
    /// current one.
    ///
    /// Each row is found by a key only one index has: the attempt by its primary key, the
    /// payment by its id (why not by its merchant too: `OfMerchant`).
    ///
    /// False, with nothing written, when the attempt is no longer open (the payment ended, or
    /// another order paid it and its other orders were closed, while this one was being made
    /// at WeChat): the caller closes the order there.
    pub async fn set_attempt_credential(
        &self,
        merchant_id: &str,
        payment_id: &str,
        out_trade_no: &str,
        credential: &str,
        now: i64,
    ) -> Result<bool> {
        let mut batch = Batch::default();
        let values = |key: &str| -> Vec<Value> {
            vec![
                credential.into(),
                now.into(),
                key.into(),
                out_trade_no.into(),
            ]
        };
        let mut payment = values(payment_id);
        payment.push(merchant_id.into());
        batch.push(ATTEMPT_CREDENTIAL_SQL, values(merchant_id));
        batch.push(PAYMENT_CREDENTIAL_SQL, payment);
        let counts = self.write().await?.atomically(batch).await?;
        Ok(counts.first() == Some(&1))
    }

    /// Marks an open attempt closed (its order was closed at WeChat). False if it was not open.
    pub async fn close_attempt(
        &self,
        merchant_id: &str,
        out_trade_no: &str,
        now: i64,
    ) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE payment_attempts SET status = 'closed', updated_at = $1 \
             WHERE merchant_id = $2 AND out_trade_no = $3 AND status = 'open'",
        )
        .bind(now)
        .bind(merchant_id)
        .bind(out_trade_no)
        .execute(&mut *self.write().await?)
        .await?
        .rows_affected()
            == 1)
    }

    /// Records that an attempt was paid although another attempt already paid the payment:
    /// its status, its transaction, a new payment version, the `payment.duplicate_paid` event
    /// (carrying that version), its ledger posting and `refund` (the order's refund in full, not
    /// yet sent: the refund round sends it should the caller not), in one transaction.
    /// False when it was recorded before (the caller then only makes sure of its refund).
    pub async fn mark_duplicate(
        &self,
        attempt: &PaymentAttemptRow,
        transaction_id: &str,
        now: i64,
        (event_id, payload): (String, String),
        refund: &RefundRow,
    ) -> Result<bool> {
        let mut writing = self.write().await?;
        let mut tx = writing.begin().await?;
        let marked = sqlx::query(
            "UPDATE payment_attempts SET status = 'duplicate', transaction_id = $1, updated_at = $2 \
             WHERE merchant_id = $3 AND out_trade_no = $4 AND status IN ('open', 'closed')",
        )
        .bind(transaction_id)
        .bind(now)
        .bind(&attempt.merchant_id)
        .bind(&attempt.out_trade_no)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if marked == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        // The payment gains a fact (an order refunded): a new version, which the event carries.
        let payment = sqlx::query_as::<_, PaymentRow>(
            "UPDATE payments SET version = version + 1, updated_at = $1 WHERE id = $2 RETURNING *",
        )
        .bind(now)
        .bind(&attempt.payment_id)
        .fetch_one(&mut *tx)
        .await?;
        let version = payment.version;
        // The money of the second order came in too; its refund takes it out again.
        let mut batch = Batch::default();
        crate::ledger::post_payment(&mut batch, &payment, &attempt.out_trade_no, now)?;
        let event = EventRow {
            id: event_id,
            merchant_id: attempt.merchant_id.clone(),
            event_type: "payment.duplicate_paid".into(),
            object_id: attempt.payment_id.clone(),
            object_version: version,
            payload,
            created_at: now,
        };
        push_event(&mut batch, &event, &attempt.payment_id);
        batch.run(&mut tx).await?;
        // The order's refund, in the same transaction: no order is marked without it. An order
        // is marked once (the UPDATE above), so its refund is new.
        crate::refunds::insert_refund(&mut tx, refund).await?;
        tx.commit().await?;
        self.events_written();
        Ok(true)
    }
}
