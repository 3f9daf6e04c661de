-- Idempotency keys are kept for a day (the answers they replay can be large), then forgotten
-- oldest first, found by this index rather than by reading every key.
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
