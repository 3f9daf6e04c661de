//! One row of a merchant's, looked up by its id alone and its merchant checked on the row.

use crate::rows::{
    DiscrepancyRow, EventRow, PaymentLinkRow, PaymentRow, PayoutRow, PostingRow, ReconciliationRow,
    RefundRow, ReportRow,
};
use crate::{Result, Store};

/// A row that belongs to one merchant. A merchant's single row is looked up by its id alone and
/// its merchant checked on the row ([`of_merchant`]): with the merchant in the condition too,
/// PostgreSQL may plan the merchant's `(merchant_id, created_at)` index, which costs the same
/// as the primary key on a new, empty table, and keep that plan, which then reads every row of
/// the merchant at each lookup.
pub(crate) trait OfMerchant {
    fn merchant_id(&self) -> &str;
}

/// `row`, if it is `merchant_id`'s.
pub(crate) fn of_merchant<R: OfMerchant>(row: Option<R>, merchant_id: &str) -> Option<R> {
    row.filter(|r| r.merchant_id() == merchant_id)
}

macro_rules! of_merchant_by_field {
    ($($row:ty),*) => {
        $(impl OfMerchant for $row {
            fn merchant_id(&self) -> &str {
                &self.merchant_id
            }
        })*
    };
}
of_merchant_by_field!(
    PaymentRow,
    RefundRow,
    PayoutRow,
    ReportRow,
    PaymentLinkRow,
    PostingRow,
    EventRow,
    ReconciliationRow,
    DiscrepancyRow
);

/// The lookup of one row of `table` by its id (its primary key), for [`of_merchant`].
pub(crate) fn by_id_sql(table: &str) -> String {
    format!("SELECT * FROM {table} WHERE id = $1")
}

impl Store {
    /// The row of `table` with this id, if it is `merchant_id`'s (see [`OfMerchant`]).
    pub(crate) async fn merchant_row<R>(
        &self,
        table: &str,
        merchant_id: &str,
        id: &str,
    ) -> Result<Option<R>>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + OfMerchant + Send + Unpin,
    {
        let row = sqlx::query_as::<_, R>(&by_id_sql(table))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(of_merchant(row, merchant_id))
    }
}
