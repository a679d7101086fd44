"""The gateway role: MX for protected domains; checks, quarantine, then relay onward.

With no `[filter]` configured the gateway delivers everything it accepts; relay control
and recipient validation still apply (they are the engine's, not a filter's). With one,
the filter and the quarantine come from `mxflow.checks.node` (the filter's own builders),
imported only then, so a node without a filter never loads the checks.
"""

from __future__ import annotations

import dns.asyncresolver

from mxflow.config import NodeConfig
from mxflow.dns.resolver import resolver_from_endpoint
from mxflow.mail import Filter, QuarantineSink
from mxflow.roles.node import Node


def build_filter(
    config: NodeConfig, resolver: dns.asyncresolver.Resolver | None = None
) -> Filter | None:
    """The role's filter from `[filter]`, or None when the node has none."""
    if config.filter is None or isinstance(config.filter, dict):
        return None
    from mxflow.checks.node import node_pipeline

    pipeline: Filter = node_pipeline(config, resolver)
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
    """A gateway node (also used for `sink` and roles not yet specialised).

    With `[filter]` the node's filter is `mxflow.checks.node.node_pipeline` and its
    quarantine (where QUARANTINE verdicts go, which the filter recognises releases from,
    and which the node expires hourly) is one `Quarantine` recording to the node's trace.
    """
    if resolver is None and config.dns_resolver:
        resolver = resolver_from_endpoint(config.dns_resolver)
    if filter is None:
        filter = build_filter(config, resolver)
    node = Node(
        config,
        filter=filter,
        quarantine=quarantine,
        resolver=resolver,
        worker=worker,
        workers=workers,
    )
    if quarantine is None and filter is not None and config.filter is not None:
        from mxflow.checks.node import node_quarantine
        from mxflow.checks.pipeline import FilterPipeline

        store = node_quarantine(config, node.trace)
        node.set_quarantine(store)
        if isinstance(filter, FilterPipeline):
            filter.quarantine = store  # the same store verifies releases
    return node
