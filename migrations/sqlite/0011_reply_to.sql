-- Where answers to an e-mail go (its Reply-To, else its sender): a reply to the
-- conversation goes to the newest customer mail's.
ALTER TABLE messages ADD COLUMN reply_to TEXT;
