-- Issue 15: purchases name their payment provider, keep what the customer must do while a
-- charge waits for them (3-D Secure), and provider webhook events are applied once.

-- Every purchase before this migration went through the sandbox.
ALTER TABLE purchases ADD COLUMN payment_provider TEXT NOT NULL DEFAULT 'sandbox'
    CHECK (payment_provider IN ('sandbox', 'stripe', 'app_store', 'google_play'));
-- Set while a PENDING purchase waits for the customer; emptied when it settles.
ALTER TABLE purchases ADD COLUMN next_action_type TEXT NOT NULL DEFAULT '';
ALTER TABLE purchases ADD COLUMN next_action_client_secret TEXT NOT NULL DEFAULT '';
ALTER TABLE purchases ADD COLUMN next_action_redirect_url TEXT NOT NULL DEFAULT '';
-- Webhooks name the provider's charge (a Stripe PaymentIntent id).
CREATE INDEX purchases_provider_reference ON purchases (payment_provider, provider_reference);

-- Provider webhook events applied, one row per (provider, event id), written in the same
-- transaction as the event's effect: a redelivered event finds its row and does nothing.
CREATE TABLE provider_events (
    provider TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    -- the purchase it was about; empty if none was found
    purchase_id TEXT NOT NULL,
    -- what applying it did (completed, reversed, ignored: …)
    outcome TEXT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    PRIMARY KEY (provider, event_id)
);
