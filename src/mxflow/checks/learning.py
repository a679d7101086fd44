"""Learning shared by every node: the classifier's trainer and refresh on the database.

With a shared database (`[store] url = "postgresql://..."`), `SharedTrainer` writes what
is learnt to it (store/feedback.py) instead of a model file, and every node's classifier
(`SharedBayesCheck`) polls the generation every few seconds and applies the rows changed
since the one it has — so a message an administrator marks as spam on one node, a
release from quarantine or a Junk-folder move on a host, changes the verdict on all of
them. Both keep the base model (the shipped one, or the node's `bayes_model` file) and
add the learned changes to a copy of it.

Learning stays what it is without a database: idempotent per message (the ledger),
learn as the other class moves a message, unlearn removes it; the arithmetic is the
classifier's own (`BayesModel.learn` / `unlearn`, via bayes.py's `_apply`). Trainers on
every node take turns, so each learns on the latest counts. Classification stays off the
event loop for big messages as before; the new model is built in a worker thread and
swapped in whole, so a message is always scored by one model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mxflow.checks.base import Check
from mxflow.checks.bayes import (
    RELOAD_INTERVAL,
    BayesCheck,
    Trainer,
    _apply,
    load_model,
    message_digest,
)
from mxflow.checks.classifier import _G0, BayesModel
from mxflow.store import feedback
from mxflow.store.feedback import LearnedState, TokenChange
from mxflow.store.sql import Cursor, Database, open_database

log = logging.getLogger("mxflow.filter")


def copy_model(model: BayesModel) -> BayesModel:
    """A copy whose tables can change without touching `model` (the shipped model is
    shared read-only by every pipeline of a process)."""
    return BayesModel(
        model.nham, model.nspam, dict(model.counts), dict(model.weights), model.logistic
    )


def apply_changes(
    model: BayesModel, base: BayesModel, state: LearnedState, changes: Iterable[TokenChange]
) -> None:
    """Make `model` the base model plus the learned changes (in place)."""
    model.nham = max(0, base.nham + state.nham)
    model.nspam = max(0, base.nspam + state.nspam)
    model.logistic = base.logistic
    for c in changes:
        ham0, spam0 = base.counts.get(c.token, (0, 0))
        ham, spam = max(0, ham0 + c.ham), max(0, spam0 + c.spam)
        if ham or spam:
            model.counts[c.token] = (ham, spam)
        else:
            model.counts.pop(c.token, None)
        if c.token in base.weights or c.weight or c.g:  # a token never stepped has none
            w0, g0 = base.weights.get(c.token, (0.0, _G0))
            model.weights[c.token] = (w0 + c.weight, g0 + c.g)
        else:
            model.weights.pop(c.token, None)


def changes_from(base: BayesModel, model: BayesModel, tokens: Iterable[str]) -> list[TokenChange]:
    """What `model` learned over `base` for these tokens (as store/feedback.py keeps it)."""
    found = []
    for token in sorted(tokens):
        ham0, spam0 = base.counts.get(token, (0, 0))
        ham, spam = model.counts.get(token, (0, 0))
        w0, g0 = base.weights.get(token, (0.0, _G0))
        w, g = model.weights.get(token, (0.0, _G0))
        found.append(TokenChange(token, ham - ham0, spam - spam0, w - w0, g - g0))
    return found


@dataclass
class _Recording(BayesModel):
    """A model that remembers which tokens learning touched (the rows to write)."""

    touched: set[str] = field(default_factory=set)

    def learn(self, tokens: Iterable[str], is_spam: bool, *, online: bool = True) -> None:
        listed = list(tokens)
        self.touched.update(listed)
        super().learn(listed, is_spam, online=online)

    def unlearn(self, tokens: Iterable[str], is_spam: bool) -> None:
        listed = list(tokens)
        self.touched.update(listed)
        super().unlearn(listed, is_spam)


class SharedModel:
    """The base model plus the shared database's learned changes, at a generation."""

    def __init__(self, db: Database, base: BayesModel) -> None:
        self.db = db
        self.base = base
        self.model = base
        self.generation = 0

    def load(self) -> BayesModel:
        """Read what changed since our generation and build the new model (a thread)."""
        with self.db.transaction() as tx:
            state = feedback.state(tx)
            if state.generation == self.generation:
                return self.model
            since = self.generation if state.generation > self.generation else 0
            changes = feedback.changes_since(tx, since)
        model = copy_model(self.model if since else self.base)
        apply_changes(model, self.base, state, changes)
        self.model, self.generation = model, state.generation
        return model

    async def refresh(self) -> BayesModel:
        """The current model: one small read while nothing was learnt."""
        if await feedback.generation(self.db) != self.generation:
            return await asyncio.to_thread(self.load)
        return self.model


@dataclass
class SharedBayesCheck(BayesCheck):
    """The classifier, with every node's learning applied within `RELOAD_INTERVAL` s."""

    shared: SharedModel | None = None
    _failures: int = 0

    async def _refresh(self) -> None:
        now = time.monotonic()
        if self.shared is None or now - self._seen[0] < RELOAD_INTERVAL:
            return
        self._seen = (now, 0.0)  # before the await: concurrent messages do not all poll
        try:
            self.model = await self.shared.refresh()
            self._failures = 0
        except Exception as exc:  # the database is down, or worse: score with what we have
            self._failures += 1
            if self._failures & (self._failures - 1) == 0:
                log.error("learned counts: refresh failed (%d in a row): %s", self._failures, exc)


def share_learning(checks: Sequence[Check], db: Database) -> list[Check]:
    """`checks` with the classifier replaced by one that follows the shared learning."""
    return [
        SharedBayesCheck(c.policy, c.model, None, shared=SharedModel(db, c.model))
        if isinstance(c, BayesCheck) and not isinstance(c, SharedBayesCheck)
        else c
        for c in checks
    ]


class SharedTrainer(Trainer):
    """Learns into the shared database; `path` is the base model (read, never written).

    Opens the database for each training and closes it after: trainers are made per use
    (a command, a release, a folder pass) and must not leave connection pools behind.
    """

    def __init__(self, path: Path, url: str) -> None:
        super().__init__(path)
        self.url = url
        self.where = "the shared database"  # what `filter learn` names as the model
        self.base = load_model(path)
        self._model: _Recording | None = None
        self._generation = 0

    def train_many(
        self, messages: Iterable[bytes], is_spam: bool, *, unlearn: bool = False
    ) -> tuple[BayesModel, Counter[str]]:
        """Learn (or unlearn) messages in one transaction: the ledger rows, the changed
        tokens and one new generation; returns the shared model after it, and the outcomes."""
        raws = list(messages)
        db = open_database(self.url)
        try:
            with self._lock:
                try:
                    with db.transaction() as tx:
                        db.lock(tx, "mxflow-feedback")
                        return self._train(tx, raws, is_spam, unlearn)
                except BaseException:
                    self._model = None  # trained in memory, not committed: reload next time
                    raise
        finally:
            db.close()

    def _current(self, tx: Cursor) -> tuple[_Recording, LearnedState]:
        """Our copy of the model, brought to the database's generation."""
        state = feedback.state(tx)
        if self._model is None or state.generation < self._generation:
            b = copy_model(self.base)
            self._model = _Recording(b.nham, b.nspam, b.counts, b.weights, b.logistic)
            self._generation = 0
        if state.generation != self._generation:
            apply_changes(
                self._model, self.base, state, feedback.changes_since(tx, self._generation)
            )
            self._generation = state.generation
        self._model.touched = set()
        return self._model, state

    def _train(
        self, tx: Cursor, raws: Sequence[bytes], is_spam: bool, unlearn: bool
    ) -> tuple[BayesModel, Counter[str]]:
        model, state = self._current(tx)
        digests = [message_digest(raw) for raw in raws]
        before = feedback.learnt(tx, digests)
        ledger = dict(before)
        outcomes: Counter[str] = Counter()
        for raw in raws:
            outcomes[_apply(model, ledger, raw, is_spam, unlearn)] += 1
        changed: dict[str, bool | None] = {
            d: ledger.get(d) for d in set(before) | set(ledger) if before.get(d) != ledger.get(d)
        }
        if not changed:  # all already learnt (or not learnt, to unlearn): nothing to write
            return model, outcomes
        new = LearnedState(
            state.generation + 1,
            model.nham - self.base.nham,
            model.nspam - self.base.nspam,
        )
        feedback.record(
            tx, new, changes_from(self.base, model, model.touched), changed, time.time()
        )
        self._generation = new.generation
        return model, outcomes
