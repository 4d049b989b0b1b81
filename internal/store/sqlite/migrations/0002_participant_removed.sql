-- A participant the clinician removed from the visit cannot come back with its cookie.
ALTER TABLE participants ADD COLUMN removed_at INTEGER;
