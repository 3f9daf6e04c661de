//! Refunds: the amount reserved atomically with the refund's creation, status changes that
//! move the payment's sums (and make it `refunded` when they reach the amount), and the
//! background work of submitting again and querying.

use wxgate_domain::refund::{
    self, ABNORMAL_QUERY_INTERVAL_MS, REFUND_WINDOW_MS, REFUNDS_PER_PAYMENT_MAX, RefundEvent,
    RefundStatus, RefundTransition,
};
use wxgate_domain::{PaymentEvent, PaymentStatus, Transition, payment};

use crate::batch::Batch;
use crate::outbox::push_event;
use crate::payments::{check_money, transition_statements};
use crate::{
    EventRow, PaymentRow, RefundFacts, RefundNote, RefundRow, RefundTransitionOutcome,
    ReserveOutcome, Result, Store, StoreError, TransitionFacts,
};

/// The statuses of a refund still open: submitted or queried by its sync. The index the claim
/// reads is made under this condition (migration 0016).
const OPEN: &str = "('pending', 'abnormal')";

impl Store {
    /// Writes a new refund and reserves its amount on the payment, in one transaction and only
    /// if WeChat's rules allow it given every refund made so far, so that concurrent refunds
    /// can never add up to more than was paid.
    pub async fn reserve_refund(&self, r: &RefundRow) -> Result<ReserveOutcome> {
        if let Some(existing) = self
            .refund_by_merchant_refund_id(&r.merchant_id, &r.merchant_refund_id)
            .await?
        {
            return Ok(ReserveOutcome::Existing(Box::new(existing)));
        }
        let mut writing = self.write().await?;
        let mut tx = writing.begin().await?;
        // The refund of an order paid twice returns that order's money: the payment's own sums
        // and WeChat's per-payment rules are not its business (its merchant_refund_id, derived
        // from the order, makes it once).
        if r.attempt_out_trade_no.is_none() && !reserve_on_payment(&mut tx, r).await? {
            tx.rollback().await?;
            let payment = self
                .payment(&r.merchant_id, &r.payment_id)
                .await?
                .ok_or_else(|| StoreError::PaymentNotFound(r.payment_id.clone()))?;
            return Ok(ReserveOutcome::Refused(Box::new(payment)));
        }
        let inserted = insert_refund(&mut tx, r).await;
        match inserted {
            Ok(_) => {
                tx.commit().await?;
                Ok(ReserveOutcome::Reserved(Box::new(r.clone())))
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                // Another request with the same merchant_refund_id won the race.
                tx.rollback().await?;
                let existing = self
                    .refund_by_merchant_refund_id(&r.merchant_id, &r.merchant_refund_id)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt("a refund vanished".into()))?;
                Ok(ReserveOutcome::Existing(Box::new(existing)))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn refund(&self, merchant_id: &str, id: &str) -> Result<Option<RefundRow>> {
        self.merchant_row(merchant_id, id).await
    }

    pub async fn refund_by_merchant_refund_id(
        &self,
        merchant_id: &str,
        merchant_refund_id: &str,
    ) -> Result<Option<RefundRow>> {
        Ok(sqlx::query_as::<_, RefundRow>(
            "SELECT * FROM refunds WHERE merchant_id = $1 AND merchant_refund_id = $2",
        )
        .bind(merchant_id)
        .bind(merchant_refund_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn refund_by_out_refund_no(
        &self,
        merchant_id: &str,
        out_refund_no: &str,
    ) -> Result<Option<RefundRow>> {
        Ok(sqlx::query_as::<_, RefundRow>(
            "SELECT * FROM refunds WHERE merchant_id = $1 AND out_refund_no = $2",
        )
        .bind(merchant_id)
        .bind(out_refund_no)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A payment's refunds, oldest first.
    pub async fn refunds_for_payment(
        &self,
        merchant_id: &str,
        payment_id: &str,
    ) -> Result<Vec<RefundRow>> {
        Ok(sqlx::query_as::<_, RefundRow>(
            "SELECT * FROM refunds WHERE merchant_id = $1 AND payment_id = $2 ORDER BY created_at, id",
        )
        .bind(merchant_id)
        .bind(payment_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records what happened to a pending refund's request without changing its status:
    /// whether WeChat accepted it, its refund id, why it waits, and when to look again.
    /// Releases any claim. A refund that is no longer pending (a callback settled it
    /// meanwhile) is left as it is.
    pub async fn note_refund_attempt(&self, id: &str, note: &RefundNote<'_>) -> Result<()> {
        sqlx::query(&format!(
            "UPDATE refunds SET submitted = CASE WHEN $1 = 1 THEN 1 ELSE submitted END, \
             submitted_at = CASE WHEN $1 = 1 THEN COALESCE(submitted_at, $6) ELSE submitted_at END, \
             wechat_refund_id = COALESCE(wechat_refund_id, $2), last_error = $3, \
             sync_due_at = $4, sync_attempts = $5, \
             claimed_until = NULL, updated_at = $6 WHERE id = $7 AND status IN {OPEN}",
        ))
        .bind(i64::from(note.submitted))
        .bind(note.wechat_refund_id)
        .bind(note.last_error)
        .bind(note.next_due)
        .bind(note.attempts)
        .bind(note.now)
        .bind(id)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    /// Applies what WeChat reports about a refund. In one transaction, and only if nobody
    /// changed the refund in between: its new status and outbox event; on success the
    /// payment's refunded sum grows (and the payment becomes `refunded`, with its own event,
    /// once refunds reach its amount); on failure the reserved amount is released.
    pub async fn refund_transition(
        &self,
        merchant_id: &str,
        refund_id: &str,
        event: RefundEvent,
        facts: &RefundFacts,
        render_refund: impl Fn(&RefundRow) -> (String, String) + Sync,
        render_payment: impl Fn(&PaymentRow) -> (String, String) + Sync,
    ) -> Result<RefundTransitionOutcome> {
        for _ in 0..8 {
            let current = self
                .refund(merchant_id, refund_id)
                .await?
                .ok_or_else(|| StoreError::Corrupt(format!("refund {refund_id} not found")))?;
            let from = current.status;
            let to = match refund::apply(from, event)? {
                RefundTransition::Unchanged => {
                    return Ok(RefundTransitionOutcome::Unchanged(Box::new(current)));
                }
                RefundTransition::To(to) => to,
            };
            let version = current.version + 1;
            let mut writing = self.write().await?;
            let mut tx = writing.begin().await?;
            let Some(refund) = write_refund_status(&mut tx, &current, to, facts).await? else {
                tx.rollback().await?;
                continue;
            };
            let mut batch = Batch::default();
            let payment = move_payment_sums(
                &mut tx,
                &mut batch,
                &current,
                to,
                facts.now,
                &render_payment,
            )
            .await?;
            if to == RefundStatus::Succeeded {
                post_refund(&mut batch, &current, facts.now)?;
            }
            if let Some(event_type) = to.event_type() {
                let (event_id, payload) = render_refund(&refund);
                let event = EventRow {
                    id: event_id,
                    merchant_id: merchant_id.to_string(),
                    event_type: event_type.to_string(),
                    object_id: refund_id.to_string(),
                    object_version: version,
                    payload,
                    created_at: facts.now,
                };
                push_event(&mut batch, &event, &current.payment_id);
            }
            batch.run(&mut tx).await?;
            tx.commit().await?;
            self.events_written();
            return Ok(RefundTransitionOutcome::Changed {
                refund: Box::new(refund),
                payment: Box::new(payment),
            });
        }
        Err(StoreError::Corrupt(format!(
            "refund {refund_id} kept changing under a transition"
        )))
    }

    /// Claims up to `limit` pending (or abnormal) refunds whose submission or query is due.
    pub async fn claim_due_refunds(&self, now: i64, limit: i64) -> Result<Vec<RefundRow>> {
        self.claim_rows(&self.claim_due_refunds_sql(), now, limit)
            .await
    }

    /// The claim: up to `$3` open refunds due at `$2`, leased until `$1`.
    pub(crate) fn claim_due_refunds_sql(&self) -> String {
        self.claim_sql("refunds", &format!("status IN {OPEN}"))
    }

    /// Paid-after-close payments of merchants whose policy is to refund them, not yet refunded.
    pub async fn paid_after_close_to_refund(&self, limit: i64) -> Result<Vec<PaymentRow>> {
        Ok(sqlx::query_as::<_, PaymentRow>(
            "SELECT p.* FROM payments p JOIN merchants m ON m.id = p.merchant_id \
             WHERE p.status = 'paid_after_close' AND m.paid_after_close_policy = 'refund' \
             AND p.refund_count = 0 LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// Writes a new refund row inside a transaction.
pub(crate) async fn insert_refund(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    r: &RefundRow,
) -> std::result::Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO refunds (id, merchant_id, payment_id, merchant_refund_id, out_refund_no, amount, \
         currency, reason, status, version, fingerprint, submitted, wechat_refund_id, last_error, \
         created_at, updated_at, succeeded_at, sync_due_at, sync_attempts, claimed_until, attempt_out_trade_no, \
         submitted_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, NULL, $20, $21)",
    )
    .bind(&r.id)
    .bind(&r.merchant_id)
    .bind(&r.payment_id)
    .bind(&r.merchant_refund_id)
    .bind(&r.out_refund_no)
    .bind(r.amount)
    .bind(&r.currency)
    .bind(&r.reason)
    .bind(r.status.as_str())
    .bind(r.version)
    .bind(&r.fingerprint)
    .bind(r.submitted.stored())
    .bind(&r.wechat_refund_id)
    .bind(&r.last_error)
    .bind(r.created_at)
    .bind(r.updated_at)
    .bind(r.succeeded_at)
    .bind(r.sync_due_at)
    .bind(r.sync_attempts)
    .bind(&r.attempt_out_trade_no)
    .bind(r.submitted.is_set().then_some(r.created_at))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Reserves a refund's amount on its payment, under WeChat's rules, in one conditional UPDATE:
/// false when the payment's state refuses it.
async fn reserve_on_payment(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    r: &RefundRow,
) -> Result<bool> {
    let reserved = sqlx::query(
            "UPDATE payments SET amount_reserved = amount_reserved + $1, refund_count = refund_count + 1, \
             updated_at = $2 WHERE id = $3 AND merchant_id = $4 \
             AND status IN ('succeeded', 'paid_after_close') AND amount_reserved + $1 <= amount \
             AND refund_count < $5 AND paid_at >= $6",
        )
        .bind(r.amount)
        .bind(r.created_at)
        .bind(&r.payment_id)
        .bind(&r.merchant_id)
        .bind(REFUNDS_PER_PAYMENT_MAX)
        .bind(r.created_at - REFUND_WINDOW_MS)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    Ok(reserved == 1)
}

/// What a refund's new status does to its payment's sums, in the refund's transaction: success
/// adds to the refunded sum (and a payment refunded in full becomes `refunded`, with its own
/// event); failure frees the reserved amount. A twice-paid order's refund moves nothing.
/// Returns the payment after; what follows from a payment refunded in full goes into `batch`.
async fn move_payment_sums(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    batch: &mut Batch,
    current: &RefundRow,
    to: RefundStatus,
    now: i64,
    render_payment: &(dyn Fn(&PaymentRow) -> (String, String) + Sync),
) -> Result<PaymentRow> {
    let sums = match to {
        // A twice-paid order's refund moves none of the payment's sums.
        _ if current.attempt_out_trade_no.is_some() => "updated_at = $2",
        RefundStatus::Succeeded => "amount_refunded = amount_refunded + $1, updated_at = $2",
        RefundStatus::Failed => "amount_reserved = amount_reserved - $1, updated_at = $2",
        _ => "updated_at = $2",
    };
    let mut payment = sqlx::query_as::<_, PaymentRow>(&format!(
        "UPDATE payments SET {sums} WHERE id = $3 RETURNING *"
    ))
    .bind(current.amount)
    .bind(now)
    .bind(&current.payment_id)
    .fetch_one(&mut **tx)
    .await?;
    check_money(&payment)?;
    let payment_status = payment.status;
    let fully_refunded = current.attempt_out_trade_no.is_none()
        && payment.amount_refunded >= payment.amount
        && payment::apply(payment_status, PaymentEvent::FullyRefunded)
            == Ok(Transition::To(PaymentStatus::Refunded));
    if fully_refunded {
        let facts = TransitionFacts {
            now,
            source: "refund".into(),
            ..Default::default()
        };
        // The row was just read inside this transaction, so its version holds.
        payment = transition_statements(
            tx,
            batch,
            &payment,
            PaymentStatus::Refunded,
            &facts,
            render_payment,
        )
        .await?
        .ok_or_else(|| StoreError::Corrupt("a payment changed mid-transaction".into()))?;
    }
    Ok(payment)
}

/// Adds to `batch` the ledger posting of a succeeded refund (once per refund).
fn post_refund(batch: &mut Batch, refund: &RefundRow, now: i64) -> Result<()> {
    use wxgate_domain::ledger::{Posting, PostingKind};
    let posting = Posting::new(PostingKind::Refund, refund.amount)
        .map_err(|e| StoreError::Corrupt(format!("refund {}: {e}", refund.id)))?;
    let src = crate::PostingSource {
        merchant_id: &refund.merchant_id,
        currency: &refund.currency,
        source_id: &refund.id,
        payment_id: Some(&refund.payment_id),
        refund_id: Some(&refund.id),
        now,
    };
    crate::ledger::post(batch, &posting, &src);
    Ok(())
}

/// A refund's new status (and what comes with it), written only if its version is still the
/// one read: the refund after, or `None` when someone changed it first.
async fn write_refund_status(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    current: &RefundRow,
    to: RefundStatus,
    facts: &RefundFacts,
) -> Result<Option<RefundRow>> {
    Ok(sqlx::query_as::<_, RefundRow>(
        "UPDATE refunds SET status = $1, version = $2, updated_at = $3, \
         wechat_refund_id = COALESCE(wechat_refund_id, $4), succeeded_at = $5, \
         last_error = $6, submitted = 1, submitted_at = COALESCE(submitted_at, $3), \
         sync_due_at = $9, claimed_until = NULL \
         WHERE id = $7 AND version = $8 RETURNING *",
    )
    .bind(to.as_str())
    .bind(current.version + 1)
    .bind(facts.now)
    .bind(&facts.wechat_refund_id)
    .bind(if to == RefundStatus::Succeeded {
        facts.succeeded_at.or(Some(facts.now))
    } else {
        None
    })
    .bind(&facts.last_error)
    .bind(&current.id)
    .bind(current.version)
    // An abnormal refund is still queried, slowly, until it is resolved.
    .bind((to == RefundStatus::Abnormal).then_some(facts.now + ABNORMAL_QUERY_INTERVAL_MS))
    .fetch_optional(&mut **tx)
    .await?)
}
