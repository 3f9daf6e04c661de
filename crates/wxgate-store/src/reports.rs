//! Reports, and the pages their files are streamed from.

use super::*;

impl Store {
    pub async fn insert_report(&self, r: &ReportRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO reports (id, merchant_id, kind, date_from, date_to, token_hash, expires_at, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&r.id)
        .bind(&r.merchant_id)
        .bind(r.kind.as_str())
        .bind(&r.date_from)
        .bind(&r.date_to)
        .bind(&r.token_hash)
        .bind(r.expires_at)
        .bind(r.created_at)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    pub async fn report(&self, merchant_id: &str, id: &str) -> Result<Option<ReportRow>> {
        self.merchant_row(merchant_id, id).await
    }

    /// The report a download link names, by its id and token hash.
    pub async fn report_by_token(&self, id: &str, token_hash: &str) -> Result<Option<ReportRow>> {
        Ok(sqlx::query_as::<_, ReportRow>(
            "SELECT * FROM reports WHERE id = $1 AND token_hash = $2",
        )
        .bind(id)
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A new download link for a report: its token hash and expiry.
    pub async fn renew_report_link(
        &self,
        id: &str,
        token_hash: &str,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query("UPDATE reports SET token_hash = $1, expires_at = $2 WHERE id = $3")
            .bind(token_hash)
            .bind(expires_at)
            .bind(id)
            .execute(&mut *self.write().await?)
            .await?;
        Ok(())
    }

    /// A page of the merchant's payments created in the range.
    pub async fn payments_page(
        &self,
        merchant_id: &str,
        page: &ReportPage,
    ) -> Result<Vec<PaymentRow>> {
        self.page_of("payments", merchant_id, page).await
    }

    /// A page of the merchant's refunds created in the range.
    pub async fn refunds_page(
        &self,
        merchant_id: &str,
        page: &ReportPage,
    ) -> Result<Vec<RefundRow>> {
        self.page_of("refunds", merchant_id, page).await
    }

    /// A page of the merchant's ledger postings made in the range.
    pub async fn postings_page(
        &self,
        merchant_id: &str,
        page: &ReportPage,
    ) -> Result<Vec<PostingRow>> {
        self.page_of("ledger_postings", merchant_id, page).await
    }

    async fn page_of<T>(&self, table: &str, merchant_id: &str, page: &ReportPage) -> Result<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
    {
        let (after_at, after_id) = page.after.clone().unwrap_or((i64::MIN, String::new()));
        let sql = format!(
            "SELECT * FROM {table} WHERE merchant_id = $1 AND created_at >= $2 AND created_at < $3 \
             AND (created_at, id) > ($4, $5) ORDER BY created_at, id LIMIT $6"
        );
        Ok(sqlx::query_as::<_, T>(&sql)
            .bind(merchant_id)
            .bind(page.from)
            .bind(page.to)
            .bind(after_at)
            .bind(after_id)
            .bind(page.limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The discrepancies of the merchant's reconciliations of these days (YYYY-MM-DD,
    /// inclusive), with each one's day, a page at a time after (created_at, id).
    pub async fn discrepancies_page(
        &self,
        merchant_id: &str,
        days: (&str, &str),
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<(String, DiscrepancyRow)>> {
        let (after_at, after_id) = after.unwrap_or((i64::MIN, String::new()));
        let rows = sqlx::query(
            "SELECT d.*, r.bill_date FROM discrepancies d \
             JOIN reconciliations r ON r.id = d.reconciliation_id \
             WHERE d.merchant_id = $1 AND r.bill_date >= $2 AND r.bill_date <= $3 \
             AND (d.created_at, d.id) > ($4, $5) ORDER BY d.created_at, d.id LIMIT $6",
        )
        .bind(merchant_id)
        .bind(days.0)
        .bind(days.1)
        .bind(after_at)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            use sqlx::FromRow;
            let day: String = row.try_get("bill_date")?;
            out.push((day, DiscrepancyRow::from_row(row)?));
        }
        Ok(out)
    }
}
