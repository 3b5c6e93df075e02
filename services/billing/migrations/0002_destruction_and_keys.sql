-- What billing no longer keeps in plaintext, and how a destroyed tenant's account is marked.
--
-- The company is accounts' to keep: billing is told it per invoice and keeps it on the invoice
-- only, so the account's copy goes (new rows leave it null). A processor token lives in the
-- events alone, under the tenant's key: the read model's copy goes (new rows leave it null).
-- Both columns are dropped by a later release, once no running version writes them.
ALTER TABLE billing_accounts ALTER COLUMN company DROP NOT NULL;
ALTER TABLE payment_methods ALTER COLUMN token DROP NOT NULL;

-- Set by the tenant_destroyed event: no more invoice runs; once the last held invoice's hold
-- ends, the tenant's keys go too.
ALTER TABLE billing_accounts ADD COLUMN destroyed_at timestamptz;
-- Tenants destroyed before this release were marked by an erased company.
UPDATE billing_accounts SET destroyed_at = now() WHERE company = '[erased]';

UPDATE billing_accounts SET company = NULL;
UPDATE payment_methods SET token = NULL;
