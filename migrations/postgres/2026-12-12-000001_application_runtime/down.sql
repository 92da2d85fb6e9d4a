ALTER TABLE application DROP CONSTRAINT application_driver_check;
ALTER TABLE application ADD CONSTRAINT application_driver_check
    CHECK (driver IN ('process', 'shell', 'http', 'noop'));
ALTER TABLE application DROP COLUMN runtime;
