"""The gateway role: MX for protected domains; checks (later issues), then relay onward.

With no `[filter]` configured the gateway delivers everything it accepts; relay control
and recipient validation still apply (they are the engine's, not a filter's).
"""

from __future__ import annotations

import dns.asyncresolver

from mxflow.checks.base import Filter, QuarantineSink
from mxflow.config import NodeConfig
from mxflow.dns.resolver import resolver_from_endpoint
from mxflow.roles.node import Node


def build_filter(
    config: NodeConfig, resolver: dns.asyncresolver.Resolver | None = None
) -> Filter | None:
    """The role's filter from `[filter]` (mxflow.checks.pipeline), or None without one."""
    if config.filter is None or isinstance(config.filter, dict):
        return None
    try:
        from mxflow.checks.pipeline import FilterPipeline
    except ImportError:
        return None
    pipeline: Filter = FilterPipeline(policy=config.filter, resolver=resolver)
    return pipeline


def build_node(
    config: NodeConfig,
    *,
    resolver: dns.asyncresolver.Resolver | None = None,
    filter: Filter | None = None,
    quarantine: QuarantineSink | None = None,
    worker: int = 0,
    workers: int = 1,
) -> Node:
    """A gateway node (also used for `sink` and roles not yet specialised)."""
    if resolver is None and config.delivery.dns:
        resolver = resolver_from_endpoint(config.delivery.dns)
    return Node(
        config,
        filter=filter if filter is not None else build_filter(config, resolver),
        quarantine=quarantine,
        resolver=resolver,
        worker=worker,
        workers=workers,
    )
