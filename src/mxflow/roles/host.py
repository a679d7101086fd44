"""The mailbox host role (the Exchange Online stand-in): accepted domains and mailboxes.

Its screen (intake/lockdown.py) takes recipients from the directory and locks the host
down to its inbound connectors; its DATA stages, in order:

    sanitise             forged Authentication-Results and X-MS-Exchange-Organization-* out
    sender-ownership     submitted mail (a logged-in user): From: must be the user's own
    enhanced-filtering   the original sender behind skip-listed hops (scenario 2)
    filter               the host's own checks -> verdict and SCL (unless the connector
                         bypasses filtering: SCL -1); both only for mail from outside:
                         a logged-in user's mail is the organisation's own (its SPF
                         and DMARC are judged where it is received, not here)
    mail-flow-rules      the administrator's transport rules (honour the gateway's verdict)
    verdict-headers      Authentication-Results and the verdict's headers
    scl                  X-MS-Exchange-Organization-SCL, the final SCL
    expand               aliases and groups -> mailboxes (traced as Expanded)
    sign                 DKIM / ARC when [auth] asks for it (DKIM: a logged-in user's
                         mail, or a relay connector's)
    store                quarantine (high-confidence spam, malware), or the spool

Delivery then files each message in the recipient's Maildir: Inbox, or Junk for SCL 5-9;
mail for other domains leaves by the routes (MX, or an outbound connector's smart hosts).
"""

from __future__ import annotations

from mxflow.auth.policy import AuthPolicy
from mxflow.config import NodeConfig
from mxflow.intake.base import Filter, Stage, Transaction
from mxflow.intake.enhanced import EnhancedFilteringStage
from mxflow.intake.expand import ExpansionStage
from mxflow.intake.filtering import FilterStage
from mxflow.intake.mailflow import RulesStage
from mxflow.intake.sanitise import SanitiseStage
from mxflow.intake.sender import SenderOwnershipStage
from mxflow.intake.stamp import SclStage, SignStage, VerdictHeadersStage
from mxflow.intake.store import StoreStage
from mxflow.store.directory import Directory
from mxflow.store.trace import TraceStore

ORGANIZATION_HEADERS = ("X-MS-Exchange-Organization-",)


class FromOutside:
    """Run `stage` only for mail that did not come through a login (inbound mail)."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.name = stage.name

    async def run(self, tx: Transaction) -> None:
        if tx.session.auth_user is None:
            await self.stage.run(tx)


def host_stages(
    config: NodeConfig,
    *,
    authserv_id: str,
    filter: Filter | None,
    auth: AuthPolicy | None,
    directory: Directory,
    trace: TraceStore,
    store: StoreStage,
) -> list[Stage]:
    """The host's DATA stages, in order."""
    host = config.host
    stages: list[Stage] = [
        SanitiseStage(authserv_id, strip_prefixes=ORGANIZATION_HEADERS),
        SenderOwnershipStage(directory),
        FromOutside(EnhancedFilteringStage(host, config.hostname)),
    ]
    if filter is not None:
        stages.append(FromOutside(FilterStage(filter, bypass=host.scl_bypass)))
    stages.append(RulesStage(host.mail_flow_rules))
    if filter is not None:
        stages.append(VerdictHeadersStage(authserv_id))
    stages += [SclStage(), ExpansionStage(directory, trace)]
    if auth is not None:
        stages.append(SignStage(auth))
    stages.append(store)
    return stages
