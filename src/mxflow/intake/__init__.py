"""Intake: the stages a message passes on its way in, from MAIL FROM to the spool.

    screen.py     connector match, relay control, recipient validation (MAIL / RCPT)
    pipeline.py   the runner: connection and envelope checks, then the DATA stages
    sanitise.py   forged Authentication-Results in our name are removed
    filtering.py  the checks -> one verdict (reject / quarantine / junk / deliver)
    stamp.py      Authentication-Results and verdict headers, DKIM signature, ARC seal
    store.py      the quarantine or the spool (fsync before the 250), and the trace
    skiplist.py   enhanced filtering for connectors: the original sender behind skipped hops
    rules.py      mail flow rules (conditions -> actions), the host's transport rules
    headerfields.py  a linear header-field parser and rewriter the two above share

A role is a list of stages (roles/), not a code path: the host adds its own (lock-down,
enhanced filtering, mail flow rules), the archiver a journal copy.
"""
