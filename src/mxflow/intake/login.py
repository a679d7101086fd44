"""The host's logins: who a submission client is, checked against the directory.

The protocol asks `throttled` when AUTH arrives (a throttled address is answered at once)
and the server awaits `verify` with the decoded credentials. The user name is the
mailbox address; the directory lookup is an indexed local read (done inline, as the
screen's), the scrypt comparison runs in a worker thread so the event loop never waits
for it; at most `MAX_HASHING` hashes run at once (16 MiB and a core each), so a flood of
logins queues here instead of taking every worker thread the node's deliveries need. An
unknown user costs the same hash as a known one (store/passwords.py), so the
answer's timing does not tell which mailboxes exist.
"""

from __future__ import annotations

import asyncio
import logging

from mxflow.intake.throttle import LoginThrottle
from mxflow.smtp.protocol import Session
from mxflow.smtp.sasl import AuthOutcome, Credentials
from mxflow.store.directory import Directory
from mxflow.store.passwords import verify_password

log = logging.getLogger("mxflow.intake")

MAX_HASHING = 2


class DirectoryLogins:
    """`smtp.protocol.Authenticator` over the host's directory, with failure throttling."""

    def __init__(self, directory: Directory, throttle: LoginThrottle | None = None) -> None:
        self.directory = directory
        self.throttle = throttle or LoginThrottle()
        self._hashing = asyncio.Semaphore(MAX_HASHING)

    def throttled(self, session: Session) -> bool:
        return self.throttle.blocked(session.peer_ip)

    async def verify(self, session: Session, credentials: Credentials) -> tuple[AuthOutcome, str]:
        account = credentials.username.strip().lower()
        async with self._hashing:
            # checked once a hashing slot is ours: parallel guesses queued behind it see
            # the failures counted meanwhile
            if self.throttle.blocked(session.peer_ip, account):
                return AuthOutcome.THROTTLED, account
            stored = self.directory.password_hash(account)
            good = await asyncio.to_thread(verify_password, stored, credentials.password)
        if not good:
            self.throttle.failed(session.peer_ip, account)
            return AuthOutcome.BAD, account
        self.throttle.succeeded(account)
        log.info("login client=%s user=%s", session.peer_ip, account)
        return AuthOutcome.OK, account
