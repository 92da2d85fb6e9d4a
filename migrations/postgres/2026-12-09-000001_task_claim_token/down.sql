ALTER TABLE task DROP COLUMN claim_token;
