"""The mailbox host role (the Exchange Online stand-in): accepted domains and mailboxes.

Its screen (intake/lockdown.py) takes recipients from the directory and locks the host
down to its inbound connectors; its DATA stages, in order:

    sanitise             forged Authentication-Results and X-MS-Exchange-Organization-* out
    enhanced-filtering   the original sender behind skip-listed hops (scenario 2)
    filter               the host's own checks -> verdict and SCL (unless the connector
                         bypasses filtering: SCL -1)
    mail-flow-rules      the administrator's transport rules (honour the gateway's verdict)
    verdict-headers      Authentication-Results and the verdict's headers
    scl                  X-MS-Exchange-Organization-SCL, the final SCL
    expand               aliases and groups -> mailboxes (traced as Expanded)
    sign                 DKIM / ARC when [auth] asks for it
    store                quarantine (high-confidence spam, malware), or the spool

Delivery then files each message in the recipient's Maildir: Inbox, or Junk for SCL 5-9.
"""

from __future__ import annotations

from mxflow.auth.policy import AuthPolicy
from mxflow.config import NodeConfig
from mxflow.intake.base import Filter, Stage
from mxflow.intake.enhanced import EnhancedFilteringStage
from mxflow.intake.expand import ExpansionStage
from mxflow.intake.filtering import FilterStage
from mxflow.intake.mailflow import RulesStage
from mxflow.intake.sanitise import SanitiseStage
from mxflow.intake.stamp import SclStage, SignStage, VerdictHeadersStage
from mxflow.intake.store import StoreStage
from mxflow.store.directory import Directory
from mxflow.store.trace import TraceStore

ORGANIZATION_HEADERS = ("X-MS-Exchange-Organization-",)


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
        EnhancedFilteringStage(host, config.hostname),
    ]
    if filter is not None:
        stages.append(FilterStage(filter, bypass=host.scl_bypass))
    stages.append(RulesStage(host.mail_flow_rules))
    if filter is not None:
        stages.append(VerdictHeadersStage(authserv_id))
    stages += [SclStage(), ExpansionStage(directory, trace)]
    if auth is not None:
        stages.append(SignStage(auth))
    stages.append(store)
    return stages
