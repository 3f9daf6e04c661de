-- A payout keeps the Idempotency-Key it was made under. A retry under that key which runs
-- again (its first answer was a 5xx, or its node stopped before answering) finds the payout
-- the first run wrote instead of making a second transfer. Not unique: a key may be used again
-- once its day is over; the lookup reads only the payouts of the key's day.
ALTER TABLE payouts ADD COLUMN idempotency_key TEXT;
CREATE INDEX payouts_idempotency_key ON payouts (merchant_id, idempotency_key, created_at)
    WHERE idempotency_key IS NOT NULL;
