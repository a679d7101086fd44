"""The gateway role: MX for protected domains; checks, quarantine, then relay onward.

Its intake: sanitise (forged Authentication-Results out), filter (when `[filter]` is
configured), stamp (Authentication-Results and the verdict's headers, DKIM signature for
our own senders, ARC seal), store. With no `[filter]` the gateway delivers everything it
accepts; relay control and recipient validation still apply (they are the screen's, not a
filter's). The `sink` role is the same composition today.
"""

from __future__ import annotations

from mxflow.auth.policy import AuthPolicy
from mxflow.intake.base import Filter, Stage
from mxflow.intake.filtering import FilterStage
from mxflow.intake.sanitise import SanitiseStage
from mxflow.intake.stamp import SignStage, VerdictHeadersStage
from mxflow.intake.store import StoreStage


def gateway_stages(
    *, authserv_id: str, filter: Filter | None, auth: AuthPolicy | None, store: StoreStage
) -> list[Stage]:
    """The gateway's DATA stages, in order."""
    stages: list[Stage] = [SanitiseStage(authserv_id)]
    if filter is not None:
        stages += [FilterStage(filter), VerdictHeadersStage(authserv_id)]
    if auth is not None:
        stages.append(SignStage(auth))
    stages.append(store)
    return stages
