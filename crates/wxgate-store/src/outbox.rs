//! The outbox: events, and the deliveries they fan out to.

use wxgate_domain::door::Door;

use super::*;
use crate::listing::placeholders;

/// Writes an outbox event and, in the same transaction, one pending delivery for every
/// endpoint of the merchant subscribed to its type, and one to the notify_url of `notify_of`
/// (the payment or payout the event is about, or the refunded payment) if it has one.
pub(crate) async fn insert_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    e: &EventRow,
    notify_of: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO events (id, merchant_id, event_type, object_id, object_version, payload, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&e.id)
    .bind(&e.merchant_id)
    .bind(&e.event_type)
    .bind(&e.object_id)
    .bind(e.object_version)
    .bind(&e.payload)
    .bind(e.created_at)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO webhook_deliveries (event_id, endpoint_id, merchant_id, status, attempts, \
         round_attempts, next_attempt_at, created_at) \
         SELECT $1, id, merchant_id, 'pending', 0, 0, $2, $2 FROM webhook_endpoints \
         WHERE merchant_id = $3 AND deleted_at IS NULL \
         AND (events = '*' OR ',' || events || ',' LIKE $4)",
    )
    .bind(&e.id)
    .bind(e.created_at)
    .bind(&e.merchant_id)
    .bind(format!("%,{},%", e.event_type))
    .execute(&mut **tx)
    .await?;
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
    let mut query = sqlx::query(&sql)
        .bind(&e.id)
        .bind(NOTIFY_URL_ENDPOINT)
        .bind(e.created_at)
        .bind(notify_of);
    for door in doors {
        query = query.bind(door);
    }
    query.execute(&mut **tx).await?;
    Ok(())
}
