"""Private instances of the peers mxflow is measured against (Postfix, rspamd, SpamAssassin)."""
