//! The ledger: postings and their entries, written inside the transaction of the state change
//! that causes them; balances summed from entries.

use wxgate_domain::ledger::{Account, Balances, Posting, PostingKind};

use super::*;
use crate::batch::Batch;
use crate::listing::List;

/// Postings written per transaction by [`Store::post_all`].
const POST_BATCH: usize = 5_000;
/// Postings per INSERT statement (9 parameters each; entries take 10 each).
const ROWS_PER_STATEMENT: usize = 100;

/// `($first, …), (…), …`: `rows` groups of `width` numbered parameters.
fn value_groups(rows: usize, width: usize) -> String {
    (0..rows)
        .map(|r| {
            let params: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
            format!("({})", params.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Within `tx`: writes these postings in one statement, and the entries of those that were
/// new in another. How many were new.
async fn post_rows_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    rows: &[(Posting, PostingSource<'_>)],
) -> Result<usize> {
    let ids: Vec<String> = rows
        .iter()
        .map(|_| wxgate_domain::id::PostingId::generate().to_string())
        .collect();
    let sql = format!(
        "INSERT INTO ledger_postings (id, merchant_id, currency, kind, source_id, amount, \
         payment_id, refund_id, created_at) VALUES {} \
         ON CONFLICT (merchant_id, kind, source_id) DO NOTHING RETURNING id",
        value_groups(rows.len(), 9)
    );
    let mut query = sqlx::query_as::<_, (String,)>(&sql);
    for (id, (posting, src)) in ids.iter().zip(rows) {
        query = query
            .bind(id.as_str())
            .bind(src.merchant_id)
            .bind(src.currency)
            .bind(posting.kind.as_str())
            .bind(src.source_id)
            .bind(posting.amount)
            .bind(src.payment_id)
            .bind(src.refund_id)
            .bind(src.now);
    }
    let new: std::collections::HashSet<String> = query
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .map(|(id,)| id)
        .collect();
    let fresh: Vec<(&String, &(Posting, PostingSource<'_>))> = ids
        .iter()
        .zip(rows)
        .filter(|(id, _)| new.contains(*id))
        .collect();
    if fresh.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "INSERT INTO ledger_entries (posting_id, merchant_id, currency, account, amount) VALUES {}",
        value_groups(fresh.len() * 2, 5)
    );
    let mut query = sqlx::query(&sql);
    for (id, (posting, src)) in &fresh {
        for (account, amount) in posting.entries {
            query = query
                .bind(id.as_str())
                .bind(src.merchant_id)
                .bind(src.currency)
                .bind(account.as_str())
                .bind(amount);
        }
    }
    query.execute(&mut **tx).await?;
    Ok(fresh.len())
}

/// Adds to `batch` the posting of a WeChat order's payment (once per out_trade_no).
pub(crate) fn post_payment(
    batch: &mut Batch,
    payment: &PaymentRow,
    out_trade_no: &str,
    now: i64,
) -> Result<()> {
    let posting = Posting::new(PostingKind::Payment, payment.amount)
        .map_err(|e| StoreError::Corrupt(format!("payment {}: {e}", payment.id)))?;
    let src = PostingSource {
        merchant_id: &payment.merchant_id,
        currency: &payment.currency,
        source_id: out_trade_no,
        payment_id: Some(&payment.id),
        refund_id: None,
        now,
    };
    post(batch, &posting, &src);
    Ok(())
}

/// Within `tx`: writes `posting` and its entries, unless this cause was posted before.
pub(crate) async fn post_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    posting: &Posting,
    src: &PostingSource<'_>,
) -> Result<()> {
    let mut batch = Batch::default();
    post(&mut batch, posting, src);
    batch.run(tx).await
}

/// Adds `posting` and its entries to `batch`, unless this cause was posted before: the posting
/// has a fresh id, so its entries go in only if it did.
pub(crate) fn post(batch: &mut Batch, posting: &Posting, src: &PostingSource<'_>) {
    let id = wxgate_domain::id::PostingId::generate().to_string();
    batch.push(
        "INSERT INTO ledger_postings (id, merchant_id, currency, kind, source_id, amount, \
         payment_id, refund_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (merchant_id, kind, source_id) DO NOTHING",
        vec![
            id.as_str().into(),
            src.merchant_id.into(),
            src.currency.into(),
            posting.kind.as_str().into(),
            src.source_id.into(),
            posting.amount.into(),
            src.payment_id.into(),
            src.refund_id.into(),
            src.now.into(),
        ],
    );
    for (account, amount) in posting.entries {
        batch.push(
            "INSERT INTO ledger_entries (posting_id, merchant_id, currency, account, amount) \
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM ledger_postings WHERE id = $1)",
            vec![
                id.as_str().into(),
                src.merchant_id.into(),
                src.currency.into(),
                account.as_str().into(),
                amount.into(),
            ],
        );
    }
}

impl Store {
    /// Writes many postings (a reconciliation's settlements and fees), `POST_BATCH` to a
    /// transaction and `ROWS_PER_STATEMENT` to a statement; a cause posted before is skipped.
    /// How many were written now.
    pub async fn post_all(&self, postings: &[(Posting, PostingSource<'_>)]) -> Result<usize> {
        let mut written = 0;
        for batch in postings.chunks(POST_BATCH) {
            let mut writing = self.write().await?;
            let mut tx = writing.begin().await?;
            for rows in batch.chunks(ROWS_PER_STATEMENT) {
                written += post_rows_in(&mut tx, rows).await?;
            }
            tx.commit().await?;
        }
        Ok(written)
    }

    /// Balances by currency, summed from the merchant's entries.
    pub async fn balances(&self, merchant_id: &str) -> Result<Vec<(String, Balances)>> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT currency, account, CAST(SUM(amount) AS BIGINT) FROM ledger_entries \
             WHERE merchant_id = $1 GROUP BY currency, account ORDER BY currency",
        )
        .bind(merchant_id)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<(String, Balances)> = Vec::new();
        for (currency, account, amount) in rows {
            let account = Account::parse(&account)
                .ok_or_else(|| StoreError::Corrupt(format!("ledger account {account:?}")))?;
            if out.last().is_none_or(|(c, _)| *c != currency) {
                out.push((currency.clone(), Balances::default()));
            }
            let last = out.last_mut().expect("pushed above");
            last.1.add(account, amount);
        }
        Ok(out)
    }

    pub async fn posting(&self, merchant_id: &str, id: &str) -> Result<Option<PostingRow>> {
        self.merchant_row(merchant_id, id).await
    }

    pub async fn list_postings(
        &self,
        merchant_id: &str,
        filter: &PostingFilter,
    ) -> Result<Vec<PostingRow>> {
        let mut list = List::new("ledger_postings WHERE merchant_id = ?", merchant_id);
        list.and("kind = ?", filter.kind.map(|k| k.as_str()));
        list.and("payment_id = ?", filter.payment_id.clone());
        list.fetch(
            &self.pool,
            ("created_at", "id"),
            filter.before.clone(),
            filter.limit,
        )
        .await
    }

    /// The ledger's invariants, checked over everything stored: every posting has two entries
    /// summing to zero; per merchant and currency, the ledger's revenue is every paid WeChat
    /// order, its refunds every succeeded refund, and all accounts together hold nothing.
    /// Returns what is violated (nothing when all hold). Its queries are not one snapshot: call
    /// it when no refund or payment is changing.
    pub async fn ledger_violations(&self) -> Result<Vec<String>> {
        let mut violations = Vec::new();
        let unbalanced: Vec<(String,)> = sqlx::query_as(
            "SELECT p.id FROM ledger_postings p LEFT JOIN ledger_entries e ON e.posting_id = p.id \
             GROUP BY p.id HAVING COUNT(e.account) <> 2 OR COALESCE(SUM(e.amount), 1) <> 0",
        )
        .fetch_all(&self.pool)
        .await?;
        violations.extend(
            unbalanced
                .into_iter()
                .map(|(id,)| format!("posting {id} unbalanced")),
        );
        // Each currency's accounts hold nothing together, payments or none (a settlement
        // currency has only conversions, fees and payouts).
        let uneven: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT merchant_id, currency, CAST(SUM(amount) AS BIGINT) FROM ledger_entries \
             GROUP BY merchant_id, currency HAVING SUM(amount) <> 0",
        )
        .fetch_all(&self.pool)
        .await?;
        violations.extend(uneven.into_iter().map(|(merchant_id, currency, sum)| {
            format!("{merchant_id} {currency}: entries sum to {sum}")
        }));
        let paid: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT p.merchant_id, p.currency, CAST(SUM(p.amount) AS BIGINT) FROM payment_attempts a \
             JOIN payments p ON p.id = a.payment_id WHERE a.status IN ('succeeded', 'duplicate') \
             GROUP BY p.merchant_id, p.currency",
        )
        .fetch_all(&self.pool)
        .await?;
        let refunded: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT merchant_id, currency, CAST(SUM(amount) AS BIGINT) FROM refunds \
             WHERE status = 'succeeded' GROUP BY merchant_id, currency",
        )
        .fetch_all(&self.pool)
        .await?;
        for (merchant_id, currency, amount) in paid {
            let balances = self.balances(&merchant_id).await?;
            let b = balances
                .iter()
                .find(|(c, _)| *c == currency)
                .map(|(_, b)| *b)
                .unwrap_or_default();
            let refunds = refunded
                .iter()
                .find(|(m, c, _)| *m == merchant_id && *c == currency)
                .map_or(0, |r| r.2);
            if -b.revenue != amount || b.refunds != refunds || !b.is_balanced() {
                violations.push(format!(
                    "{merchant_id} {currency}: paid {amount} refunded {refunds}, ledger {b:?}"
                ));
            }
        }
        Ok(violations)
    }
}
