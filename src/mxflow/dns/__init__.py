"""DNS for a mail flow: the injected resolver, zones and the embedded server.

* `resolver`  - the only way mxflow gets a resolver (explicit server, never the system's)
* `names`     - syntax of the domain names an admin types
* `zone`      - zones from RFC 1035 files or built in code (`Zone.from_records`)
* `server`    - `EmbeddedDnsServer`: authoritative, UDP + TCP, for tests and the lab

What a domain should publish (SPF lint, `dns plan`, `dns check`) is `mxflow.records`,
which sits above both this package and `mxflow.auth`.
"""
