"""The queue: what a node has acknowledged and not yet handed on.

* `spool`     - one fsync'd file per message (group commit) before the 250
* `scheduler` - hands spooled messages to delivery, retries with back-off, expires
* `dsn`       - RFC 3464 delivery status notifications for what could not be delivered
"""
