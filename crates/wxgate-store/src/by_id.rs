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

/// A row a merchant asks for by its id: its table's lookup by primary key.
pub(crate) trait ById:
    OfMerchant + for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin
{
    const BY_ID_SQL: &'static str;
}

/// `row`, if it is `merchant_id`'s.
pub(crate) fn of_merchant<R: OfMerchant>(row: Option<R>, merchant_id: &str) -> Option<R> {
    row.filter(|r| r.merchant_id() == merchant_id)
}

/// Each row type with its table, named once: its `OfMerchant` and `ById`, and [`BY_ID`].
macro_rules! by_id {
    ($($row:ty => $table:literal),* $(,)?) => {
        $(
            impl OfMerchant for $row {
                fn merchant_id(&self) -> &str {
                    &self.merchant_id
                }
            }
            impl ById for $row {
                const BY_ID_SQL: &'static str =
                    concat!("SELECT * FROM ", $table, " WHERE id = $1");
            }
        )*
        /// Every table whose rows are looked up by id, with its lookup (for the plan test).
        pub const BY_ID: &[(&str, &str)] = &[$(($table, <$row as ById>::BY_ID_SQL)),*];
    };
}

by_id!(
    PaymentRow => "payments",
    RefundRow => "refunds",
    PayoutRow => "payouts",
    ReportRow => "reports",
    PaymentLinkRow => "payment_links",
    PostingRow => "ledger_postings",
    EventRow => "events",
    ReconciliationRow => "reconciliations",
    DiscrepancyRow => "discrepancies",
);

impl Store {
    /// The `R` with this id, if it is `merchant_id`'s (see [`OfMerchant`]).
    pub(crate) async fn merchant_row<R: ById>(
        &self,
        merchant_id: &str,
        id: &str,
    ) -> Result<Option<R>> {
        let row = sqlx::query_as::<_, R>(R::BY_ID_SQL)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(of_merchant(row, merchant_id))
    }
}
