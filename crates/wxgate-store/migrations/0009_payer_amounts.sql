-- What the payer paid, as WeChat reports it once a payment succeeds: the amount and currency
-- (CNY for a cross-border payment priced in another currency) and the rate WeChat applied
-- (CNY per major unit of the pricing currency, scaled by 10^8).
ALTER TABLE payments ADD COLUMN payer_amount BIGINT;
ALTER TABLE payments ADD COLUMN payer_currency TEXT;
ALTER TABLE payments ADD COLUMN exchange_rate BIGINT;
