"""DNS for a mail flow: the injected resolver, the embedded server, SPF planning and linting.

* `resolver`  - the only way mxflow gets a resolver (explicit server, never the system's)
* `names`     - syntax of the domain names an admin types
* `zone`      - zones from RFC 1035 files or built in code (`Zone.from_records`)
* `server`    - `EmbeddedDnsServer`: authoritative, UDP + TCP, for tests and the lab
* `spf_lint`  - every problem of an SPF record or of a domain's published SPF, with fixes
* `topology`  - the TOML description of a domain's mail flow
* `plan`      - the records that topology needs (zone fragment and table)
* `check`     - what a live domain publishes, its scenario and its risks
"""
