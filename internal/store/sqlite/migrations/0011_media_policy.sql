-- When a visit's call goes through the SFU: 'auto' (browser to browser for two people, the
-- SFU from the third person admitted on), 'p2p' (never) or 'sfu' (always).
ALTER TABLE visits ADD COLUMN media_policy TEXT NOT NULL DEFAULT 'auto' CHECK (media_policy IN ('auto', 'p2p', 'sfu'));
