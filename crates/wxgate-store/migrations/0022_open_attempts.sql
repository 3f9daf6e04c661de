-- The open WeChat orders, by payment: the sweep that closes the orders a paid payment left
-- open reads them without reading every attempt ever made. An open order has no transaction
-- yet; the index says so in its predicate, and the sweep word for word, so that the hot
-- lookups of one attempt by its key (which say only `status = 'open'`) cannot take this index
-- in a generic plan made on an empty table.
CREATE INDEX payment_attempts_open ON payment_attempts (payment_id)
    WHERE status = 'open' AND transaction_id IS NULL;
