"""A node's filter, quarantine and trainer, built from its configuration.

The `[filter]` table may name `quarantine_dir` and `bayes_model` relative to the node's
data directory; they default to `<data_dir>/quarantine` and `<data_dir>/bayes.model.gz`
(the writable model that release-as-ham and "this is spam" train; until the first
training it is the shipped model). Quarantine events other than "quarantined" (which the
server records itself when it hands the message over) go to the node's message trace.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import dns.asyncresolver

from mxflow.checks.bayes import Trainer
from mxflow.checks.pipeline import FilterPipeline
from mxflow.config import NodeConfig
from mxflow.config.filter import FilterPolicy
from mxflow.store.quarantine import Quarantine, QuarantineEntry
from mxflow.store.sql import Database
from mxflow.store.trace import TraceStore


def node_policy(config: NodeConfig) -> FilterPolicy:
    """The node's FilterPolicy with its paths resolved against the node's data directory."""
    policy = config.filter or FilterPolicy()
    data_dir = Path(config.data_dir)

    def resolve(path: Path | None, default: str) -> Path:
        if path is None:
            return data_dir / default
        return path if path.is_absolute() else data_dir / path

    return dataclasses.replace(
        policy,
        quarantine_dir=resolve(policy.quarantine_dir, "quarantine"),
        bayes_model=resolve(policy.bayes_model, "bayes.model.gz"),
        block_file=resolve(policy.block_file, "blocked_senders.txt"),
    )


def node_pipeline(
    config: NodeConfig,
    resolver: dns.asyncresolver.Resolver | None = None,
    quarantine: Quarantine | None = None,
    **kwargs: Any,
) -> FilterPipeline:
    """The node's filter: its policy, its `[auth]` policy for the sender-auth check, and its
    quarantine (so released messages are not filtered again)."""
    auth = config.auth
    if auth is not None:
        kwargs.setdefault("auth_policy", auth)
    kwargs.setdefault("authserv_id", config.hostname or "mxflow")
    return FilterPipeline(
        node_policy(config),
        resolver=resolver,
        quarantine=quarantine if quarantine is not None else node_quarantine(config),
        **kwargs,
    )


def node_trainer(config: NodeConfig) -> Trainer:
    """The node's trainer: into its model file, or with a shared database, into that."""
    policy = node_policy(config)
    assert policy.bayes_model is not None
    if config.shared_database is not None:
        from mxflow.checks.learning import SharedTrainer

        return SharedTrainer(policy.bayes_model, config.shared_database)
    return Trainer(policy.bayes_model)


def node_quarantine(
    config: NodeConfig, trace: TraceStore | None = None, database: Database | None = None
) -> Quarantine:
    """The node's quarantine (in the shared `database` when given); with a TraceStore,
    release/delete/expire are traced."""
    policy = node_policy(config)
    assert policy.quarantine_dir is not None

    def on_event(entry: QuarantineEntry, event: str, detail: str) -> None:
        if trace is None or event == "quarantined":
            return
        status = {"released": "Pending", "deleted": "Failed", "expired": "Failed"}.get(event, "")
        for rcpt in entry.rcpt_tos or [""]:
            trace.record(
                entry.queue_id or entry.id,
                f"quarantine-{event}",
                message_id=entry.message_id,
                recipient=rcpt,
                status=status,
                detail=f"quarantine id {entry.id}; {detail}".strip("; "),
            )

    return Quarantine(
        policy.quarantine_dir,
        retention_spam_days=policy.retention_spam_days,
        retention_malware_days=policy.retention_malware_days,
        on_event=on_event,
        database=database,
    )
