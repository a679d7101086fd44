"""A node's configuration: one TOML file -> a typed, validated `NodeConfig`.

One module per section (listeners, domains, connectors, routes, engine, host, web,
archive, and the filter's and authentication's policies), composed by `node.py`; `base.py`
holds the table reader that makes every error name the file, the key and the fix. This
module is the package's face: what the rest of mxflow imports.
"""

from mxflow.config.archive import ArchiveConfig
from mxflow.config.base import IPNetwork, SmartHost, TlsMode, TlsPolicy, valid_domain
from mxflow.config.connectors import InboundConnector
from mxflow.config.domains import AcceptedDomain
from mxflow.config.engine import (
    MIN_RETRY_INTERVAL,
    DeliveryConfig,
    Limits,
    LogConfig,
    ServerConfig,
)
from mxflow.config.host import (
    DEFAULT_PRIVATE_RANGES,
    AliasEntry,
    EnhancedFiltering,
    GroupEntry,
    HostConfig,
    MailboxEntry,
    MailFlowRule,
)
from mxflow.config.listeners import Listener
from mxflow.config.node import (
    IMPLEMENTED_ROLES,
    ROLES,
    NodeConfig,
    config_warnings,
    load_config,
    parse_config,
)
from mxflow.config.routes import Route
from mxflow.config.web import WebConfig

__all__ = [
    "DEFAULT_PRIVATE_RANGES",
    "IMPLEMENTED_ROLES",
    "MIN_RETRY_INTERVAL",
    "ROLES",
    "AcceptedDomain",
    "AliasEntry",
    "ArchiveConfig",
    "DeliveryConfig",
    "EnhancedFiltering",
    "GroupEntry",
    "HostConfig",
    "IPNetwork",
    "InboundConnector",
    "Limits",
    "Listener",
    "LogConfig",
    "MailFlowRule",
    "MailboxEntry",
    "NodeConfig",
    "Route",
    "ServerConfig",
    "SmartHost",
    "TlsMode",
    "TlsPolicy",
    "WebConfig",
    "config_warnings",
    "load_config",
    "parse_config",
    "valid_domain",
]
