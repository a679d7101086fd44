"""Checks: connection, envelope and content checks behind one interface (see base.py).

The filter (what the SMTP server calls) is `pipeline.FilterPipeline`, built from a
`policy.FilterPolicy` (`policy.parse_filter_section` reads a node's `[filter]` table;
`node.node_pipeline` builds a node's filter with its paths and quarantine). Its checks:

    connection.py   DNSBL, forward-confirmed reverse DNS, HELO sanity, rate/concurrency
    lists.py        administrator allow / block lists (sender address, domain, IP)
    sender_auth.py  SPF, DKIM, DMARC, ARC, compauth (the auth area's module)
    headers.py      header anomalies
    uribl.py        URLs in the body against URI blocklists
    bayes.py        the statistical content classifier (classifier.py, tokens.py)
    attachments.py  attachment policy without ClamAV (filetypes.py: content sniffing)
    clamav.py       ClamAV through clamd (INSTREAM)
    rspamd.py       optional: the site's rspamd (HTTP /checkv2)      } scanner.py: what
    spamd.py        optional: the site's SpamAssassin (SPAMC REPORT) } the two share

`mxflow.mime` is the one bounded MIME walk they share; `verdict.py` turns the symbols into
score, SCL, action and spam headers; `train.py` builds the shipped model (`make model`).
"""
