-- What a driver keeps about an application between its calls and across owners (a Flink job's
-- id, the savepoints taken): a JSON object written only by the application's owner, with its
-- fence, and read by the next owner when it adopts the application (docs/drivers.md#flink).
-- NULL: the driver has recorded nothing.
ALTER TABLE application ADD COLUMN runtime TEXT;

-- The `flink` driver joins the drivers a row may name.
ALTER TABLE application DROP CONSTRAINT application_driver_check;
ALTER TABLE application ADD CONSTRAINT application_driver_check
    CHECK (driver IN ('process', 'shell', 'http', 'noop', 'flink'));
