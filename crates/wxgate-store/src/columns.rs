//! Reading a row's columns by name, the same way from sqlx's rows and from the rows of the
//! direct SQLite readers (`direct.rs`), so that each row type is decoded by one function.

use sqlx::Row;
use sqlx::any::AnyRow;
use wxgate_domain::payment::AttemptStatus;
use wxgate_domain::{Integration, PaymentIntegration, PaymentStatus};

use crate::column_index::ColumnIndex;
use crate::{HistoryRow, PaymentAttemptRow, PaymentRow, Result, StoreError};

/// A value both drivers can read from a column.
pub(crate) trait Column:
    for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any> + rusqlite::types::FromSql
{
}

impl<T> Column for T where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any> + rusqlite::types::FromSql
{
}

/// A row whose columns are read by name.
pub(crate) trait Columns {
    fn get<T: Column>(&self, name: &str) -> Result<T>;

    /// A text column parsed into `T`; text it does not parse is corrupt data.
    fn parse<T: TryFrom<String, Error = String>>(&self, name: &str) -> Result<T> {
        T::try_from(self.get::<String>(name)?).map_err(StoreError::Corrupt)
    }
}

impl Columns for AnyRow {
    fn get<T: Column>(&self, name: &str) -> Result<T> {
        Ok(self.try_get(name)?)
    }
}

/// A direct reader's row with its statement's [`ColumnIndex`]. Names are looked up as
/// written, so the store names columns in lower case, as its schema does.
pub(crate) struct IndexedRow<'a> {
    row: &'a rusqlite::Row<'a>,
    index: &'a ColumnIndex,
    /// Where the next lookup starts: after the column the last one found.
    next: std::cell::Cell<usize>,
}

impl<'a> IndexedRow<'a> {
    pub(crate) fn new(row: &'a rusqlite::Row<'a>, index: &'a ColumnIndex) -> Self {
        Self {
            row,
            index,
            next: std::cell::Cell::new(0),
        }
    }
}

impl Columns for IndexedRow<'_> {
    fn get<T: Column>(&self, name: &str) -> Result<T> {
        let Some(i) = self.index.find(name, self.next.get()) else {
            return Err(rusqlite::Error::InvalidColumnName(name.to_string()).into());
        };
        self.next.set(i + 1);
        Ok(self.row.get(i)?)
    }
}

/// A row type read alike through sqlx and through the direct readers.
pub(crate) trait Decode: Sized {
    fn decode(r: &impl Columns) -> Result<Self>;
}

/// What a read gathers from the rows it answers, one row at a time.
pub(crate) trait Gather: Default {
    fn add(&mut self, row: &impl Columns) -> Result<()>;
}

/// Every row, decoded.
impl<T: Decode> Gather for Vec<T> {
    fn add(&mut self, row: &impl Columns) -> Result<()> {
        self.push(T::decode(row)?);
        Ok(())
    }
}

/// A payment, from a row that holds every column of `payments`.
impl Decode for PaymentRow {
    fn decode(r: &impl Columns) -> Result<Self> {
        Ok(Self {
            id: r.get("id")?,
            merchant_id: r.get("merchant_id")?,
            merchant_order_id: r.get("merchant_order_id")?,
            out_trade_no: r.get("out_trade_no")?,
            amount: r.get("amount")?,
            currency: r.get("currency")?,
            description: r.get("description")?,
            integration: r.parse::<PaymentIntegration>("integration")?,
            status: r.parse::<PaymentStatus>("status")?,
            version: r.get("version")?,
            fingerprint: r.get("fingerprint")?,
            payer_openid: r.get("payer_openid")?,
            client_ip: r.get("client_ip")?,
            return_url: r.get("return_url")?,
            cancel_url: r.get("cancel_url")?,
            attach: r.get("attach")?,
            metadata: r.get("metadata")?,
            wechat_credential: r.get("wechat_credential")?,
            transaction_id: r.get("transaction_id")?,
            paid_at: r.get("paid_at")?,
            expires_at: r.get("expires_at")?,
            created_at: r.get("created_at")?,
            updated_at: r.get("updated_at")?,
            sync_due_at: r.get("sync_due_at")?,
            sync_attempts: r.get("sync_attempts")?,
            claimed_until: r.get("claimed_until")?,
            notify_url: r.get("notify_url")?,
            amount_refunded: r.get("amount_refunded")?,
            amount_reserved: r.get("amount_reserved")?,
            refund_count: r.get("refund_count")?,
            checkout_token: r.get("checkout_token")?,
            hosted_url: r.get("hosted_url")?,
            checkout_kind: r.get("checkout_kind")?,
            payment_link_id: r.get("payment_link_id")?,
            payer_amount: r.get("payer_amount")?,
            payer_currency: r.get("payer_currency")?,
            exchange_rate: r.get("exchange_rate")?,
            door: r.get("door")?,
        })
    }
}

impl Decode for PaymentAttemptRow {
    fn decode(r: &impl Columns) -> Result<Self> {
        Ok(Self {
            merchant_id: r.get("merchant_id")?,
            out_trade_no: r.get("out_trade_no")?,
            payment_id: r.get("payment_id")?,
            seq: r.get("seq")?,
            integration: r.parse::<Integration>("integration")?,
            status: r.parse::<AttemptStatus>("status")?,
            wechat_credential: r.get("wechat_credential")?,
            transaction_id: r.get("transaction_id")?,
            created_at: r.get("created_at")?,
            updated_at: r.get("updated_at")?,
        })
    }
}

/// A payment decoded by the same function from sqlx's rows, for `query_as` (the statements
/// that answer a payment inside a transaction).
impl<'r> sqlx::FromRow<'r, AnyRow> for PaymentRow {
    fn from_row(row: &'r AnyRow) -> sqlx::Result<Self> {
        Self::decode(row).map_err(|e| match e {
            StoreError::Database(e) => e,
            other => sqlx::Error::Decode(Box::new(other)),
        })
    }
}

impl HistoryRow {
    /// A history row joined to its payment, its columns prefixed `h_`.
    pub(crate) fn decode_joined(r: &impl Columns) -> Result<Self> {
        Ok(Self {
            status: r.parse::<PaymentStatus>("h_status")?,
            source: r.get("h_source")?,
            at: r.get("h_at")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_found_by_name_in_any_order_and_a_repeated_name_is_its_first() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let mut statement = conn
            .prepare("SELECT 1 AS a, 2 AS B, 3 AS a, 4 AS c")
            .unwrap();
        let index = ColumnIndex::of(&statement);
        let mut rows = statement.query([]).unwrap();
        let row = rows.next().unwrap().unwrap();
        let row = IndexedRow::new(row, &index);
        let read: Vec<i64> = ["c", "a", "b", "a", "c", "c"]
            .iter()
            .map(|name| row.get(name).unwrap())
            .collect();
        assert_eq!(read, [4, 1, 2, 1, 4, 4]);
        assert!(matches!(
            row.get::<i64>("d"),
            Err(StoreError::Sqlite(rusqlite::Error::InvalidColumnName(name))) if name == "d"
        ));
    }
}
