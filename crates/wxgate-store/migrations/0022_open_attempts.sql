-- The open WeChat orders, by payment: the sweep that closes the orders a paid payment left
-- open reads them without reading every attempt ever made.
CREATE INDEX payment_attempts_open ON payment_attempts (payment_id) WHERE status = 'open';
