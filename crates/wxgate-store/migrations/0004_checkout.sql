-- Hosted checkout: every payment has an unguessable checkout token and its page's URL; a hosted
-- payment's WeChat product is chosen by the shopper's device when the page first opens.
ALTER TABLE payments ADD COLUMN checkout_token TEXT;
ALTER TABLE payments ADD COLUMN hosted_url TEXT;
ALTER TABLE payments ADD COLUMN checkout_kind TEXT;
CREATE UNIQUE INDEX payments_checkout_token ON payments (checkout_token);
