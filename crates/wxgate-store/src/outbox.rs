//! The outbox: events, and the deliveries they fan out to.

use wxgate_domain::door::Door;

use super::*;
use crate::batch::{Batch, Value};
use crate::listing::placeholders;

/// Writes an outbox event and, in the same transaction, one pending delivery for every
/// endpoint of the merchant subscribed to its type, and one to the notify_url of `notify_of`
/// (the payment or payout the event is about, or the refunded payment) if it has one.
pub(crate) async fn insert_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    e: &EventRow,
    notify_of: &str,
) -> Result<()> {
    let mut batch = Batch::default();
    push_event(&mut batch, e, notify_of);
    batch.run(tx).await
}

/// [`insert_event`]'s statements, added to `batch`.
pub(crate) fn push_event(batch: &mut Batch, e: &EventRow, notify_of: &str) {
    batch.push(
        "INSERT INTO events (id, merchant_id, event_type, object_id, object_version, payload, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        vec![
            e.id.as_str().into(),
            e.merchant_id.as_str().into(),
            e.event_type.as_str().into(),
            e.object_id.as_str().into(),
            e.object_version.into(),
            e.payload.as_str().into(),
            e.created_at.into(),
        ],
    );
    batch.push(
        "INSERT INTO webhook_deliveries (event_id, endpoint_id, merchant_id, status, attempts, \
         round_attempts, next_attempt_at, created_at) \
         SELECT $1, id, merchant_id, 'pending', 0, 0, $2, $2 FROM webhook_endpoints \
         WHERE merchant_id = $3 AND deleted_at IS NULL \
         AND (events = '*' OR ',' || events || ',' LIKE $4)",
        vec![
            e.id.as_str().into(),
            e.created_at.into(),
            e.merchant_id.as_str().into(),
            format!("%,{},%", e.event_type).into(),
        ],
    );
    // A payment made through a front door notifies in that door's format, and only of the
    // events that door's system knows.
    let doors: Vec<&str> = Door::ALL
        .into_iter()
        .filter(|d| d.notified_events().contains(&e.event_type.as_str()))
        .map(Door::as_str)
        .collect();
    let door_hears = if doors.is_empty() {
        String::new()
    } else {
        format!(" OR door IN ({})", placeholders(5, doors.len()))
    };
    let sql = format!(
        "INSERT INTO webhook_deliveries (event_id, endpoint_id, merchant_id, url, status, attempts, \
         round_attempts, next_attempt_at, created_at) \
         SELECT $1, CASE WHEN door IS NULL THEN $2 ELSE 'door:' || door END, merchant_id, \
         notify_url, 'pending', 0, 0, $3, $3 FROM payments \
         WHERE id = $4 AND notify_url IS NOT NULL AND (door IS NULL{door_hears}) \
         UNION ALL SELECT $1, CASE WHEN door IS NULL THEN $2 ELSE 'door:' || door END, \
         merchant_id, notify_url, 'pending', 0, 0, $3, $3 FROM payouts \
         WHERE id = $4 AND notify_url IS NOT NULL AND (door IS NULL{door_hears})"
    );
    let mut values: Vec<Value> = vec![
        e.id.as_str().into(),
        NOTIFY_URL_ENDPOINT.into(),
        e.created_at.into(),
        notify_of.into(),
    ];
    values.extend(doors.into_iter().map(Value::from));
    batch.push(sql, values);
}
