DROP TRIGGER task_update_claim_token;
DROP TRIGGER task_insert_claim_token;
ALTER TABLE task DROP COLUMN claim_token;
