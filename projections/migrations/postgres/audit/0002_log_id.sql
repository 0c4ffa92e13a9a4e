-- The identity of the log these read models were projected from (eventlog's `log_id`): read
-- models of another log are refused at start even when they are behind this log's head.
-- NULL in a generation made before logs had an identity; the first start records it.
ALTER TABLE projector_state ADD COLUMN log_id TEXT;
