-- A cross-border merchant may be settled by WeChat in a currency other than the ones it prices
-- in (its contract says which). NULL: each payment settles in its own currency.
ALTER TABLE merchants ADD COLUMN settlement_currency TEXT;
