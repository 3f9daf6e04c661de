//! Payments: insert (with the first WeChat order), read, list, and status transitions that
//! write their history row and outbox event in the same transaction.

use super::*;
use crate::Render;
use crate::batch::{Batch, Insert, Value};
use crate::by_id::{ById, OfMerchant, of_merchant};
use crate::columns::{Columns, Decode, Gather};
use crate::listing::List;
use crate::outbox::push_event;
use wxgate_domain::Integration;

/// `Store::payment_detail`'s query around `$attempts`, a scalar subquery giving the payment's
/// (`p`'s) attempts as a JSON array, oldest first: the payment with its history rows, the
/// attempts on the first of them.
macro_rules! detail_sql {
    ($attempts:literal) => {
        concat!(
            "SELECT p.*, h.status AS h_status, h.source AS h_source, h.at AS h_at, \
             CASE WHEN h.version = 1 THEN ",
            $attempts,
            " END AS attempts_json \
             FROM payments p JOIN payment_status_history h ON h.payment_id = p.id \
             WHERE p.id = $1 ORDER BY h.version"
        )
    };
}

/// Whether the payment whose id `$0` stands for went in: its fresh id tells.
const INSERTED: &str = "EXISTS (SELECT 1 FROM payments WHERE id = $0)";

impl Store {
    /// Inserts a new payment with its first history row; if the merchant already has a payment
    /// with this `merchant_order_id`, returns that one instead.
    pub async fn insert_payment(&self, p: &PaymentRow) -> Result<InsertOutcome> {
        check_money(p)?;
        let (sql, values) = payment_insert(p);
        let mut batch = Batch::default();
        batch.push(sql, values);
        // Its first history row and WeChat order, and its count: only if the payment went in.
        let detail = first_detail(p);
        for first in &detail.attempts {
            batch.insert_when(attempt_row(first), INSERTED, (&p.id).into());
        }
        for h in &detail.history {
            let row = history_row(&p.id, p.version, h.status, &h.source, h.at);
            batch.insert_when(row, INSERTED, (&p.id).into());
        }
        crate::counts::count_new(&mut batch, p, INSERTED, (&p.id).into());
        let counts = self.write().await?.atomically(batch).await?;
        if counts.first() == Some(&1) {
            return Ok(InsertOutcome::Inserted(detail));
        }
        match self
            .payment_by_order_id(&p.merchant_id, &p.merchant_order_id)
            .await?
        {
            Some(existing) => Ok(InsertOutcome::Existing(Box::new(existing))),
            None => Err(StoreError::Corrupt(format!(
                "payment {} conflicts but is not there",
                p.id
            ))),
        }
    }

    pub async fn payment(&self, merchant_id: &str, id: &str) -> Result<Option<PaymentRow>> {
        let p = self.one_payment(PaymentRow::BY_ID_SQL, [id]).await?;
        Ok(of_merchant(p, merchant_id))
    }

    pub async fn payment_by_order_id(
        &self,
        merchant_id: &str,
        merchant_order_id: &str,
    ) -> Result<Option<PaymentRow>> {
        self.one_payment(
            "SELECT * FROM payments WHERE merchant_id = $1 AND merchant_order_id = $2",
            [merchant_id, merchant_order_id],
        )
        .await
    }

    pub async fn payment_by_out_trade_no(
        &self,
        merchant_id: &str,
        out_trade_no: &str,
    ) -> Result<Option<PaymentRow>> {
        // Any attempt's order leads to its payment.
        self.one_payment(
            "SELECT p.* FROM payment_attempts a JOIN payments p ON p.id = a.payment_id \
             WHERE a.merchant_id = $1 AND a.out_trade_no = $2",
            [merchant_id, out_trade_no],
        )
        .await
    }

    /// The payment `sql` finds with `params`, if any.
    async fn one_payment<const N: usize>(
        &self,
        sql: &str,
        params: [&str; N],
    ) -> Result<Option<PaymentRow>> {
        let p = self
            .read_rows::<Vec<PaymentRow>, N>(sql, params)
            .await?
            .pop();
        p.as_ref().map(check_money).transpose()?;
        Ok(p)
    }

    /// Newest first, `limit` at most, optionally after a cursor (a payment id from a previous
    /// page), filtered by status and creation time.
    pub async fn list_payments(
        &self,
        merchant_id: &str,
        filter: &PaymentFilter,
    ) -> Result<Vec<PaymentRow>> {
        let mut list = List::new("payments WHERE merchant_id = ?", merchant_id);
        list.and("status = ?", filter.status.map(|s| s.as_str()));
        list.and("created_at >= ?", filter.created_gte);
        list.and("created_at < ?", filter.created_lt);
        list.fetch(
            &self.pool,
            ("created_at", "id"),
            filter.before.clone(),
            filter.limit,
        )
        .await
    }

    /// The payment behind a checkout token.
    pub async fn payment_by_checkout_token(&self, token: &str) -> Result<Option<PaymentRow>> {
        Ok(
            sqlx::query_as::<_, PaymentRow>("SELECT * FROM payments WHERE checkout_token = $1")
                .bind(token)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Records the payer's openid, learnt by the hosted checkout, if none is recorded yet.
    pub async fn set_payer_openid(&self, id: &str, openid: &str, now: i64) -> Result<()> {
        sqlx::query(
            "UPDATE payments SET payer_openid = $1, updated_at = $2 WHERE id = $3 AND payer_openid IS NULL",
        )
        .bind(openid)
        .bind(now)
        .bind(id)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    /// Applies `event` to a payment: the status change, its history row and its outbox event
    /// (payload rendered by `render` from the row after the change) commit together, and only
    /// if nobody changed the payment in between (else it re-reads and tries again).
    pub async fn transition(
        &self,
        merchant_id: &str,
        payment_id: &str,
        event: PaymentEvent,
        facts: &TransitionFacts,
        render: impl Fn(&PaymentRow) -> (String, String) + Send + Sync + 'static,
    ) -> Result<TransitionOutcome> {
        let current = self.current(merchant_id, payment_id).await?;
        self.transition_loop(current, true, event, facts, Arc::new(render))
            .await
    }

    /// [`Store::transition`] from a row the caller has just read, which saves reading it again.
    /// A row changed since is found out by the conditional update, and the payment is read
    /// again; so is a row the event would not change (or may not), so that every answer but a
    /// change is decided on the payment as it is now.
    pub async fn transition_from(
        &self,
        read: PaymentRow,
        event: PaymentEvent,
        facts: &TransitionFacts,
        render: impl Fn(&PaymentRow) -> (String, String) + Send + Sync + 'static,
    ) -> Result<TransitionOutcome> {
        self.transition_loop(read, false, event, facts, Arc::new(render))
            .await
    }

    /// Applies `event` from `current`, read again when it turns out stale; `fresh` when it was
    /// read just now by this transition.
    async fn transition_loop(
        &self,
        mut current: PaymentRow,
        mut fresh: bool,
        event: PaymentEvent,
        facts: &TransitionFacts,
        render: Render,
    ) -> Result<TransitionOutcome> {
        for _ in 0..8 {
            let from = current.status;
            // An unpaid end needs the order its closer closed to be current still.
            let closed_is_current = facts
                .closed_order
                .as_ref()
                .is_none_or(|closed| *closed == current.out_trade_no);
            let to = match (closed_is_current, payment::apply(from, event)) {
                (true, Ok(Transition::To(to))) => to,
                // Nothing to write, not allowed, or an order started after the caller closed
                // the one it knew: decided on the payment as it is now.
                _ if !fresh => {
                    current = self.current(&current.merchant_id, &current.id).await?;
                    fresh = true;
                    continue;
                }
                (false, _) | (true, Ok(Transition::Unchanged)) => {
                    return Ok(TransitionOutcome::Unchanged(current));
                }
                (true, Err(e)) => return Err(e.into()),
            };
            let written = self
                .write_transition(Move {
                    current: current.clone(),
                    to,
                    facts: facts.clone(),
                    render: render.clone(),
                })
                .await?;
            let Some(after) = written else {
                current = self.current(&current.merchant_id, &current.id).await?;
                fresh = true;
                continue;
            };
            if Transition::event_type(to).is_some() {
                self.events_written();
            }
            return Ok(TransitionOutcome::Changed {
                from,
                payment: after,
            });
        }
        Err(StoreError::Corrupt(format!(
            "payment {} kept changing under a transition",
            current.id
        )))
    }

    /// The payment as it is now; an error if it is not there.
    async fn current(&self, merchant_id: &str, payment_id: &str) -> Result<PaymentRow> {
        self.payment(merchant_id, payment_id)
            .await?
            .ok_or_else(|| StoreError::PaymentNotFound(payment_id.to_string()))
    }

    /// A payment with its status history and its WeChat orders, in one round trip (the read
    /// path): the history as rows, the orders aggregated into the first row.
    pub async fn payment_detail(
        &self,
        merchant_id: &str,
        id: &str,
    ) -> Result<Option<(PaymentRow, Vec<HistoryRow>, Vec<PaymentAttemptRow>)>> {
        let detail: Option<Detail> = self.read_rows(self.detail_sql(), [id]).await?;
        let Some(Detail {
            payment,
            history,
            attempts,
        }) = of_merchant(detail, merchant_id)
        else {
            return Ok(None);
        };
        check_money(&payment)?;
        let attempts = parse_attempts(&payment, attempts.as_deref().unwrap_or("[]"))?;
        Ok(Some((payment, history, attempts)))
    }

    /// `payment_detail`'s query on this backend, written once at build: each backend has its
    /// own JSON aggregate of the payment's attempts.
    pub(crate) fn detail_sql(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => detail_sql!(
                "(SELECT json_group_array(json_object('out_trade_no', a.out_trade_no, 'seq', a.seq, \
                 'integration', a.integration, 'status', a.status, 'wechat_credential', a.wechat_credential, \
                 'transaction_id', a.transaction_id, 'created_at', a.created_at, 'updated_at', a.updated_at)) \
                 FROM (SELECT * FROM payment_attempts WHERE payment_id = p.id ORDER BY seq) a)"
            ),
            Backend::Postgres => detail_sql!(
                "(SELECT COALESCE(json_agg(json_build_object('out_trade_no', a.out_trade_no, 'seq', a.seq, \
                 'integration', a.integration, 'status', a.status, 'wechat_credential', a.wechat_credential, \
                 'transaction_id', a.transaction_id, 'created_at', a.created_at, 'updated_at', a.updated_at) \
                 ORDER BY a.seq), '[]'::json)::text FROM payment_attempts a WHERE a.payment_id = p.id)"
            ),
        }
    }

    pub async fn history(&self, payment_id: &str) -> Result<Vec<HistoryRow>> {
        Ok(sqlx::query_as::<_, HistoryRow>(
            "SELECT status, source, at FROM payment_status_history WHERE payment_id = $1 ORDER BY version",
        )
        .bind(payment_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn events_for(&self, merchant_id: &str, object_id: &str) -> Result<Vec<EventRow>> {
        Ok(sqlx::query_as::<_, EventRow>(
            "SELECT * FROM events WHERE merchant_id = $1 AND object_id = $2 ORDER BY object_version",
        )
        .bind(merchant_id)
        .bind(object_id)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// What a payment's status change means for its attempts: the one that paid succeeded; when
/// the payment ends unpaid, its open orders were closed.
fn settle_attempts(
    batch: &mut Batch,
    current: &PaymentRow,
    to: PaymentStatus,
    facts: &TransitionFacts,
) {
    let paid = matches!(to, PaymentStatus::Succeeded | PaymentStatus::PaidAfterClose);
    if let (true, Some(out_trade_no), Some(transaction_id)) =
        (paid, &facts.out_trade_no, &facts.transaction_id)
    {
        batch.push(
            "UPDATE payment_attempts SET status = 'succeeded', transaction_id = $1, updated_at = $2 \
             WHERE merchant_id = $3 AND out_trade_no = $4",
            vec![
                transaction_id.into(),
                facts.now.into(),
                (&current.merchant_id).into(),
                out_trade_no.into(),
            ],
        );
    } else if matches!(
        to,
        PaymentStatus::Cancelled | PaymentStatus::Expired | PaymentStatus::Failed
    ) {
        batch.push(
            "UPDATE payment_attempts SET status = 'closed', updated_at = $1 \
             WHERE payment_id = $2 AND status = 'open'",
            vec![facts.now.into(), (&current.id).into()],
        );
    }
}

/// The payment's row moved to `to` at `version`, with what `facts` add, if it is still at the
/// version read: the row as it is after, or `None` when someone changed it first.
async fn update_status(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    current: &PaymentRow,
    to: PaymentStatus,
    facts: &TransitionFacts,
    version: i64,
) -> Result<Option<PaymentRow>> {
    Ok(sqlx::query_as::<_, PaymentRow>(
        "UPDATE payments SET status = $1, version = $2, updated_at = $3, \
         transaction_id = COALESCE(transaction_id, $4), paid_at = COALESCE(paid_at, $5), \
         sync_due_at = $6, out_trade_no = COALESCE($9, out_trade_no), \
         payer_amount = COALESCE(payer_amount, $10), payer_currency = COALESCE(payer_currency, $11), \
         exchange_rate = COALESCE(exchange_rate, $12) WHERE id = $7 AND version = $8 \
         AND ($13 IS NULL OR out_trade_no = $13) RETURNING *",
    )
    .bind(to.as_str())
    .bind(version)
    .bind(facts.now)
    .bind(&facts.transaction_id)
    .bind(facts.paid_at)
    .bind(if to.is_pending() {
        current.sync_due_at
    } else {
        None
    })
    .bind(&current.id)
    .bind(current.version)
    .bind(facts.transaction_id.as_ref().and(facts.out_trade_no.as_ref()))
    .bind(facts.payer.as_ref().map(|p| p.amount))
    .bind(facts.payer.as_ref().map(|p| p.currency.clone()))
    .bind(facts.payer.as_ref().and_then(|p| p.exchange_rate))
    .bind(&facts.closed_order)
    .fetch_optional(&mut **tx)
    .await?)
}

/// Moves `current` to `to` if nobody changed it first (a conditional update, which answers
/// the row after, or `None`), and adds what follows from it to `batch` for the caller to run:
/// the orders settled, the ledger posting, the history row and the outbox event (payload
/// rendered from the row after). Several transitions can share one batch and one commit.
pub(crate) async fn transition_statements(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    batch: &mut Batch,
    current: &PaymentRow,
    to: PaymentStatus,
    facts: &TransitionFacts,
    render: &(dyn Fn(&PaymentRow) -> (String, String) + Sync),
) -> Result<Option<PaymentRow>> {
    let version = current.version + 1;
    let Some(after) = update_status(tx, current, to, facts, version).await? else {
        return Ok(None);
    };
    check_money(&after)?;
    settle_attempts(batch, current, to, facts);
    if to.is_paid() && !current.status.is_paid() {
        let out_trade_no = facts
            .out_trade_no
            .as_deref()
            .unwrap_or(&current.out_trade_no);
        crate::ledger::post_payment(batch, current, out_trade_no, facts.now)?;
    }
    push_history(batch, &current.id, version, to, &facts.source, facts.now);
    if let Some(event_type) = Transition::event_type(to) {
        let (event_id, payload) = render(&after);
        let event = EventRow {
            id: event_id,
            merchant_id: current.merchant_id.clone(),
            event_type: event_type.to_string(),
            object_id: current.id.clone(),
            object_version: version,
            payload,
            created_at: facts.now,
        };
        push_event(batch, &event, &current.id);
    }
    // Last: on PostgreSQL the shared count's row is locked until the commit, so as late as can be.
    crate::counts::count_move(batch, current, to);
    Ok(Some(after))
}

/// Adds a payment's status history row to `batch`.
fn push_history(
    batch: &mut Batch,
    payment_id: &str,
    version: i64,
    status: PaymentStatus,
    source: &str,
    at: i64,
) {
    batch.insert(history_row(payment_id, version, status, source, at));
}

fn history_row(
    payment_id: &str,
    version: i64,
    status: PaymentStatus,
    source: &str,
    at: i64,
) -> Insert {
    Insert {
        into: "payment_status_history (payment_id, version, status, source, at)",
        values: vec![
            payment_id.into(),
            version.into(),
            status.as_str().into(),
            source.into(),
            at.into(),
        ],
    }
}

/// Inserts an attempt inside a transaction.
pub(crate) async fn insert_attempt(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    a: &PaymentAttemptRow,
) -> Result<()> {
    let mut batch = Batch::default();
    push_attempt(&mut batch, a);
    batch.run(tx).await
}

/// [`insert_attempt`]'s statement, added to `batch`.
fn push_attempt(batch: &mut Batch, a: &PaymentAttemptRow) {
    batch.insert(attempt_row(a));
}

fn attempt_row(a: &PaymentAttemptRow) -> Insert {
    Insert {
        into: "payment_attempts (merchant_id, out_trade_no, payment_id, seq, integration, status, \
         wechat_credential, transaction_id, created_at, updated_at)",
        values: vec![
            (&a.merchant_id).into(),
            (&a.out_trade_no).into(),
            (&a.payment_id).into(),
            a.seq.into(),
            a.integration.as_str().into(),
            a.status.as_str().into(),
            (&a.wechat_credential).into(),
            (&a.transaction_id).into(),
            a.created_at.into(),
            a.updated_at.into(),
        ],
    }
}

/// A payment with its history, gathered from the rows of [`Store::payment_detail`]'s query
/// (one per history row, the first also carrying the payment's attempts as JSON).
struct Detail {
    payment: PaymentRow,
    history: Vec<HistoryRow>,
    attempts: Option<String>,
}

impl OfMerchant for Detail {
    fn merchant_id(&self) -> &str {
        &self.payment.merchant_id
    }
}

impl Gather for Option<Detail> {
    fn add(&mut self, row: &impl Columns) -> Result<()> {
        let history = HistoryRow::decode_joined(row)?;
        match self {
            Some(d) => d.history.push(history),
            None => {
                *self = Some(Detail {
                    payment: PaymentRow::decode(row)?,
                    history: vec![history],
                    attempts: row.get("attempts_json")?,
                });
            }
        }
        Ok(())
    }
}

/// Inserts a payment row, and counts it, unless its merchant_order_id is taken.
pub(crate) async fn insert_payment_row(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    p: &PaymentRow,
) -> Result<()> {
    let (sql, values) = payment_insert(p);
    let mut batch = Batch::default();
    batch.push(sql, values);
    crate::counts::count_new(&mut batch, p, INSERTED, (&p.id).into());
    batch.run(tx).await
}

/// The statement inserting `p` unless its merchant_order_id is taken, with its values.
fn payment_insert(p: &PaymentRow) -> (&'static str, Vec<Value>) {
    let sql = "INSERT INTO payments (id, merchant_id, merchant_order_id, out_trade_no, amount, currency, description, \
         integration, status, version, fingerprint, payer_openid, client_ip, return_url, cancel_url, attach, metadata, \
         wechat_credential, transaction_id, paid_at, expires_at, created_at, updated_at, sync_due_at, sync_attempts, \
         claimed_until, notify_url, checkout_token, hosted_url, payment_link_id, door) VALUES ($1, $2, $3, $4, $5, $6, $7, \
         $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, \
         $31) \
         ON CONFLICT DO NOTHING";
    let values = vec![
        (&p.id).into(),
        (&p.merchant_id).into(),
        (&p.merchant_order_id).into(),
        (&p.out_trade_no).into(),
        p.amount.into(),
        (&p.currency).into(),
        (&p.description).into(),
        p.integration.as_str().into(),
        p.status.as_str().into(),
        p.version.into(),
        (&p.fingerprint).into(),
        (&p.payer_openid).into(),
        (&p.client_ip).into(),
        (&p.return_url).into(),
        (&p.cancel_url).into(),
        (&p.attach).into(),
        (&p.metadata).into(),
        (&p.wechat_credential).into(),
        (&p.transaction_id).into(),
        p.paid_at.into(),
        p.expires_at.into(),
        p.created_at.into(),
        p.updated_at.into(),
        p.sync_due_at.into(),
        p.sync_attempts.into(),
        p.claimed_until.into(),
        (&p.notify_url).into(),
        (&p.checkout_token).into(),
        (&p.hosted_url).into(),
        (&p.payment_link_id).into(),
        (&p.door).into(),
    ];
    (sql, values)
}

/// The payment's money invariant, checked where its sums are written (inside the writing
/// transaction, so a breach rolls back) and where a payment is read: refunds that succeeded
/// never exceed what is reserved for refunds, which never exceeds what was paid.
pub(crate) fn check_money(p: &PaymentRow) -> Result<()> {
    let holds = p.amount > 0
        && 0 <= p.amount_refunded
        && p.amount_refunded <= p.amount_reserved
        && p.amount_reserved <= p.amount;
    if holds {
        Ok(())
    } else {
        tracing::error!(payment = %p.id, amount = p.amount, reserved = p.amount_reserved, refunded = p.amount_refunded, "money invariant broken");
        Err(StoreError::Corrupt(format!(
            "payment {}: refunded {} ≤ reserved {} ≤ amount {} does not hold",
            p.id, p.amount_refunded, p.amount_reserved, p.amount
        )))
    }
}

/// A payment's attempts from their JSON aggregate (see `detail_sql`).
fn parse_attempts(p: &PaymentRow, json: &str) -> Result<Vec<PaymentAttemptRow>> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("payment {}: attempt {what}", p.id));
    let items: Vec<AttemptJson> =
        serde_json::from_str(json).map_err(|e| corrupt(&format!("aggregate: {e}")))?;
    items
        .into_iter()
        .map(|a| {
            Ok(PaymentAttemptRow {
                merchant_id: p.merchant_id.clone(),
                out_trade_no: a.out_trade_no,
                payment_id: p.id.clone(),
                seq: a.seq,
                integration: Integration::try_from(a.integration)
                    .map_err(|_| corrupt("integration"))?,
                status: AttemptStatus::try_from(a.status).map_err(|_| corrupt("status"))?,
                wechat_credential: a.wechat_credential,
                transaction_id: a.transaction_id,
                created_at: a.created_at,
                updated_at: a.updated_at,
            })
        })
        .collect()
}

/// One attempt as the detail query's JSON aggregate writes it (`detail_sql`).
#[derive(serde::Deserialize)]
struct AttemptJson {
    out_trade_no: String,
    seq: i64,
    integration: String,
    status: String,
    wechat_credential: Option<String>,
    transaction_id: Option<String>,
    created_at: i64,
    updated_at: i64,
}
