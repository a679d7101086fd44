"""What a domain should publish, and what it does publish: above both `dns` and `auth`.

* `spf_lint`  - every problem of an SPF record or of a domain's published SPF, with fixes
* `topology`  - the TOML description of a domain's mail flow
* `plan`      - the records that topology needs (zone fragment and table)
* `check`     - what a live domain publishes, its scenario and its risks
"""
