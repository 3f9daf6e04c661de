//! Payouts: written with their ledger reserve in one transaction; status changes with their
//! event and ledger posting in one transaction, conditional on the version read; the
//! background work of sending again and querying, claimed with a lease.

use wxgate_domain::ledger::{Posting, PostingKind};
use wxgate_domain::payout::{self, PayoutEvent, PayoutStatus, PayoutTransition};

use crate::listing::List;
use crate::outbox::insert_event;
use crate::{
    CLAIM_LEASE_MS, EventRow, PayoutFacts, PayoutFilter, PayoutNote, PayoutRow, PostingSource,
    Result, Store, StoreError,
};

/// Statuses the background work still looks at.
const OPEN: &str = "('pending', 'awaiting_confirmation', 'processing')";

impl Store {
    /// Writes a new payout and reserves its amount in the ledger, in one transaction. False
    /// (nothing written) when its merchant_payout_id is taken.
    pub async fn insert_payout(&self, p: &PayoutRow) -> Result<bool> {
        let mut writing = self.write().await?;
        let mut tx = writing.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO payouts (id, merchant_id, out_bill_no, mchid, amount, currency, appid, \
             openid, remark, user_name_sealed, scene, notify_url, metadata, status, version, \
             maybe_at_wechat, transfer_bill_no, package_info, failure_code, last_error, \
             confirmation_token, created_at, updated_at, finished_at, sync_due_at, \
             sync_attempts, claimed_until, merchant_payout_id, door, idempotency_key) VALUES ($1, \
             $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, NULL, NULL, NULL, \
             NULL, $17, $18, $19, NULL, $20, 0, $21, $22, $23, $24)",
        )
        .bind(&p.id)
        .bind(&p.merchant_id)
        .bind(&p.out_bill_no)
        .bind(&p.mchid)
        .bind(p.amount)
        .bind(&p.currency)
        .bind(&p.appid)
        .bind(&p.openid)
        .bind(&p.remark)
        .bind(&p.user_name_sealed)
        .bind(&p.scene)
        .bind(&p.notify_url)
        .bind(&p.metadata)
        .bind(p.status.as_str())
        .bind(p.version)
        .bind(p.maybe_at_wechat.stored())
        .bind(&p.confirmation_token)
        .bind(p.created_at)
        .bind(p.updated_at)
        .bind(p.sync_due_at)
        .bind(p.claimed_until)
        .bind(&p.merchant_payout_id)
        .bind(&p.door)
        .bind(&p.idempotency_key)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                tx.rollback().await?;
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
        post_payout_in(&mut tx, p, PostingKind::PayoutReserve, p.created_at).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn payout(&self, merchant_id: &str, id: &str) -> Result<Option<PayoutRow>> {
        self.merchant_row(merchant_id, id).await
    }

    pub async fn payout_by_out_bill_no(
        &self,
        merchant_id: &str,
        out_bill_no: &str,
    ) -> Result<Option<PayoutRow>> {
        Ok(sqlx::query_as::<_, PayoutRow>(
            "SELECT * FROM payouts WHERE merchant_id = $1 AND out_bill_no = $2",
        )
        .bind(merchant_id)
        .bind(out_bill_no)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The merchant's payout with this merchant_payout_id.
    pub async fn payout_by_merchant_payout_id(
        &self,
        merchant_id: &str,
        merchant_payout_id: &str,
    ) -> Result<Option<PayoutRow>> {
        Ok(sqlx::query_as::<_, PayoutRow>(
            "SELECT * FROM payouts WHERE merchant_id = $1 AND merchant_payout_id = $2",
        )
        .bind(merchant_id)
        .bind(merchant_payout_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The merchant's latest payout made under this Idempotency-Key since `since` (Unix ms).
    pub async fn payout_by_idempotency_key(
        &self,
        merchant_id: &str,
        key: &str,
        since: i64,
    ) -> Result<Option<PayoutRow>> {
        Ok(sqlx::query_as::<_, PayoutRow>(
            "SELECT * FROM payouts WHERE merchant_id = $1 AND idempotency_key = $2 \
             AND created_at >= $3 ORDER BY created_at DESC LIMIT 1",
        )
        .bind(merchant_id)
        .bind(key)
        .bind(since)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The payout behind a hosted confirmation page's token.
    pub async fn payout_by_confirmation_token(&self, token: &str) -> Result<Option<PayoutRow>> {
        Ok(
            sqlx::query_as::<_, PayoutRow>("SELECT * FROM payouts WHERE confirmation_token = $1")
                .bind(token)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Newest first, after an optional keyset cursor (created_at, id).
    pub async fn list_payouts(
        &self,
        merchant_id: &str,
        filter: &PayoutFilter,
        before: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<PayoutRow>> {
        let mut list = List::new("payouts WHERE merchant_id = ?", merchant_id);
        list.and("status = ?", filter.status.map(|s| s.as_str()));
        list.and("created_at >= ?", filter.created_gte);
        list.and("created_at < ?", filter.created_lt);
        list.fetch(&self.pool, ("created_at", "id"), before, limit)
            .await
    }

    /// Records what happened to a payout's request without changing its status, and releases
    /// any claim. A payout that reached a final status meanwhile is left as it is. The mark that
    /// WeChat may hold the transfer is only ever raised here (see
    /// [`clear_payout_maybe_at_wechat`](Self::clear_payout_maybe_at_wechat)).
    pub async fn note_payout_attempt(&self, id: &str, note: &PayoutNote<'_>) -> Result<()> {
        sqlx::query(&format!(
            "UPDATE payouts SET maybe_at_wechat = CASE WHEN $1 = 1 THEN 1 ELSE maybe_at_wechat END, \
             transfer_bill_no = COALESCE(transfer_bill_no, $2), last_error = $3, \
             sync_due_at = $4, sync_attempts = $5, claimed_until = NULL, updated_at = $6 \
             WHERE id = $7 AND status IN {OPEN}"
        ))
        .bind(i64::from(note.maybe_at_wechat))
        .bind(note.transfer_bill_no)
        .bind(note.last_error)
        .bind(note.next_due)
        .bind(note.attempts)
        .bind(note.now)
        .bind(id)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    /// Applies what WeChat reports about a payout. In one transaction, and only if nobody
    /// changed it in between: its new status, its event, and the ledger posting a final status
    /// makes. `next_due` is when an open payout is looked at again.
    pub async fn payout_transition(
        &self,
        merchant_id: &str,
        id: &str,
        event: PayoutEvent,
        facts: &PayoutFacts,
        next_due: Option<i64>,
        render: impl Fn(&PayoutRow) -> (String, String) + Sync,
    ) -> Result<(bool, PayoutRow)> {
        for _ in 0..8 {
            let current = self
                .payout(merchant_id, id)
                .await?
                .ok_or_else(|| StoreError::Corrupt(format!("payout {id} not found")))?;
            let to = match payout::apply(current.status, event)? {
                PayoutTransition::Unchanged => return Ok((false, current)),
                PayoutTransition::To(to) => to,
            };
            let mut writing = self.write().await?;
            let mut tx = writing.begin().await?;
            if write_payout_status(&mut tx, &current, to, facts, next_due).await? == 0 {
                tx.rollback().await?;
                continue;
            }
            if let Some(kind) = to.posting() {
                post_payout_in(&mut tx, &current, kind, facts.now).await?;
            }
            let after = sqlx::query_as::<_, PayoutRow>("SELECT * FROM payouts WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            if let Some(event_type) = to.event_type() {
                let (event_id, payload) = render(&after);
                let event = EventRow {
                    id: event_id,
                    merchant_id: merchant_id.to_string(),
                    event_type: event_type.to_string(),
                    object_id: id.to_string(),
                    object_version: after.version,
                    payload,
                    created_at: facts.now,
                };
                insert_event(&mut tx, &event, id).await?;
            }
            tx.commit().await?;
            self.events_written();
            return Ok((true, after));
        }
        Err(StoreError::Corrupt(format!(
            "payout {id} kept changing under a transition"
        )))
    }

    /// The payouts whose transfer WeChat took that were made in [from, to) (Unix ms).
    pub async fn payouts_sent_between(
        &self,
        merchant_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<PayoutRow>> {
        Ok(sqlx::query_as::<_, PayoutRow>(
            "SELECT * FROM payouts WHERE merchant_id = $1 AND transfer_bill_no IS NOT NULL \
             AND created_at >= $2 AND created_at < $3",
        )
        .bind(merchant_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The merchant's payouts with these out_bill_nos.
    pub async fn payouts_by_out_bill_no(
        &self,
        merchant_id: &str,
        out_bill_nos: &[String],
    ) -> Result<Vec<PayoutRow>> {
        let mut found = Vec::new();
        for chunk in out_bill_nos.chunks(crate::reconciliations::LOOKUP_CHUNK) {
            let sql = format!(
                "SELECT * FROM payouts WHERE merchant_id = $1 AND out_bill_no IN ({})",
                crate::listing::placeholders(2, chunk.len())
            );
            let mut query = sqlx::query_as::<_, PayoutRow>(&sql).bind(merchant_id);
            for no in chunk {
                query = query.bind(no.clone());
            }
            found.extend(query.fetch_all(&self.pool).await?);
        }
        Ok(found)
    }

    /// Claims up to `limit` open payouts whose sending or query is due.
    pub async fn claim_due_payouts(&self, now: i64, limit: i64) -> Result<Vec<PayoutRow>> {
        self.claim_rows(&self.claim_due_payouts_sql(), now, limit)
            .await
    }

    /// The claim: up to `$3` open payouts due at `$2`, leased until `$1`.
    pub(crate) fn claim_due_payouts_sql(&self) -> String {
        self.claim_sql("payouts", &format!("status IN {OPEN}"))
    }

    /// Claims one payout that can still be cancelled for this request (a cancel), unless
    /// another holds it: `None` then.
    pub async fn claim_payout(&self, id: &str, now: i64) -> Result<Option<PayoutRow>> {
        Ok(sqlx::query_as::<_, PayoutRow>(
            "UPDATE payouts SET claimed_until = $1 WHERE id = $2 \
             AND status IN ('pending', 'awaiting_confirmation') \
             AND (claimed_until IS NULL OR claimed_until < $3) RETURNING *",
        )
        .bind(now + CLAIM_LEASE_MS)
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *self.write().await?)
        .await?)
    }

    /// A send starts: WeChat may hold the transfer from here on, the send's start is the
    /// payout's `updated_at`, and the sender's claim (the `claimed_until` it holds, `held`) is
    /// stretched to `until`, past the send's whole window. `false`, with nothing written, when
    /// the payout is no longer open or another holds it (the sender's claim lapsed and was
    /// taken): nothing may be sent then.
    pub async fn start_payout_send(
        &self,
        id: &str,
        held: i64,
        now: i64,
        until: i64,
    ) -> Result<bool> {
        let started = sqlx::query(&format!(
            "UPDATE payouts SET maybe_at_wechat = 1, updated_at = $1, claimed_until = $2 \
             WHERE id = $3 AND status IN {OPEN} AND claimed_until = $4"
        ))
        .bind(now)
        .bind(until)
        .bind(id)
        .bind(held)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(started.rows_affected() == 1)
    }

    /// WeChat definitely refused a fresh send (NOT_ENOUGH): it holds no transfer, and the next
    /// send needs no query first. Only for a payout still pending with no transfer number.
    pub async fn clear_payout_maybe_at_wechat(&self, id: &str) -> Result<()> {
        sqlx::query(
            "UPDATE payouts SET maybe_at_wechat = 0 WHERE id = $1 AND status = 'pending' \
             AND transfer_bill_no IS NULL",
        )
        .bind(id)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    /// Gives up a claim taken with [`claim_payout`](Self::claim_payout), nothing changed: only
    /// while it is still the one held (`held`), so a claim that lapsed and was taken by another
    /// stays theirs.
    pub async fn release_payout_claim(&self, id: &str, held: i64) -> Result<()> {
        sqlx::query("UPDATE payouts SET claimed_until = NULL WHERE id = $1 AND claimed_until = $2")
            .bind(id)
            .bind(held)
            .execute(&mut *self.write().await?)
            .await?;
        Ok(())
    }

    /// The default transfer scene of a merchant's payouts (JSON), or none.
    pub async fn set_payout_scene(&self, merchant_id: &str, scene: Option<&str>) -> Result<bool> {
        Ok(
            sqlx::query("UPDATE merchants SET payout_scene = $1 WHERE id = $2")
                .bind(scene)
                .bind(merchant_id)
                .execute(&mut *self.write().await?)
                .await?
                .rows_affected()
                == 1,
        )
    }
}

/// A payout's new status (and what comes with it), written only if its version is still the
/// one read: how many rows changed. A final status stops the background work.
async fn write_payout_status(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    current: &PayoutRow,
    to: PayoutStatus,
    facts: &PayoutFacts,
    next_due: Option<i64>,
) -> Result<u64> {
    let done = to.is_final();
    Ok(sqlx::query(
        "UPDATE payouts SET status = $1, version = $2, updated_at = $3, \
         transfer_bill_no = COALESCE($4, transfer_bill_no), \
         package_info = COALESCE($5, package_info), failure_code = $6, last_error = $7, \
         finished_at = $8, sync_due_at = $9, claimed_until = NULL, \
         maybe_at_wechat = CASE WHEN $10 = 1 THEN 1 ELSE maybe_at_wechat END \
         WHERE id = $11 AND version = $12",
    )
    .bind(to.as_str())
    .bind(current.version + 1)
    .bind(facts.now)
    .bind(&facts.transfer_bill_no)
    .bind(&facts.package_info)
    .bind(&facts.failure_code)
    .bind(&facts.last_error)
    .bind(done.then_some(facts.now))
    .bind(if done { None } else { next_due })
    .bind(i64::from(facts.transfer_bill_no.is_some()))
    .bind(&current.id)
    .bind(current.version)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

/// Within `tx`: a payout's posting of `kind` (once per payout and kind).
async fn post_payout_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    p: &PayoutRow,
    kind: PostingKind,
    now: i64,
) -> Result<()> {
    let posting = Posting::new(kind, p.amount)
        .map_err(|e| StoreError::Corrupt(format!("payout {}: {e}", p.id)))?;
    let src = PostingSource {
        merchant_id: &p.merchant_id,
        currency: &p.currency,
        source_id: &p.id,
        payment_id: None,
        refund_id: None,
        now,
    };
    crate::ledger::post_in(tx, &posting, &src).await?;
    Ok(())
}
