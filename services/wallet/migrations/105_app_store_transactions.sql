-- Issue 15: an App Store transaction is redeemed (recorded and credited) once, whoever
-- presents it: its transactionId is the purchase's provider reference, unique per provider.
-- Partial: other providers' purchases keep an empty reference while they are PENDING.
CREATE UNIQUE INDEX purchases_app_store_transaction ON purchases (payment_provider, provider_reference)
    WHERE payment_provider = 'app_store';
