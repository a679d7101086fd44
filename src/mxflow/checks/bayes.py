"""The content classifier as a check: `BAYES_SPAM` / `BAYES_HAM` with the deciding tokens.

The probability maps to a score that alone reaches the junk band from 0.96 and the
high-confidence band from 0.995 (default policy), while a confident ham probability lowers
the score a little. The 0.96 was chosen by validation inside the training folds only
(folds 1-4 among themselves; fold 0 never looked at): the lowest probability at which,
together with the header-anomaly scores, at most 0.1 % of ham reached the junk band.
GTUBE, the standard spam test string, is always spam.
Learning goes to the policy's writable model (`filter.bayes_model`); without one the
shipped model is used read-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mxflow import mime
from mxflow.checks.classifier import BayesModel, Score, default_model, shipped_model_bytes
from mxflow.checks.tokens import tokenize
from mxflow.config.filter import FilterPolicy
from mxflow.mail import CheckResult, MessageContext, Phase

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
BIG = 256 * 1024  # messages larger than this are analysed in a worker thread
# (probability, score) breakpoints, linear in between
SPAM_CURVE = ((0.5, 0.0), (0.96, 5.0), (0.995, 10.0), (1.0, 12.0))
HAM_CURVE = ((0.0, -2.0), (0.1, -1.0), (0.5, 0.0))
FULL_EVIDENCE = 20  # clues needed for the probability to count in full
RELOAD_INTERVAL = 5.0  # seconds between looks at the model file


def bayes_score(probability: float) -> float:
    """The symbol score for a spam probability (piecewise linear)."""
    curve = SPAM_CURVE if probability >= 0.5 else HAM_CURVE
    for (p0, s0), (p1, s1) in itertools.pairwise(curve):
        if p0 <= probability <= p1:
            return round(s0 + (s1 - s0) * (probability - p0) / (p1 - p0), 3)
    return 0.0


def shrink(probability: float, clues: int) -> float:
    """Pull the probability toward 0.5 when few tokens decided it: a three-line note with
    nine known words is weak evidence however the chi-square combines them."""
    weight = min(1.0, clues / FULL_EVIDENCE)
    return 0.5 + (probability - 0.5) * weight


def load_model(path: Path | None) -> BayesModel:
    """The model at `path`, or the shipped one when there is none (yet)."""
    if path is not None and path.exists():
        return BayesModel.load(path)
    return default_model()


@dataclass
class BayesCheck:
    """Scores with `model`; with `path`, picks up a retrained model file within a few
    seconds (learning happens in other processes: `mxflow quarantine release`, `filter learn`)."""

    policy: FilterPolicy
    model: BayesModel = field(default_factory=default_model)
    path: Path | None = None
    name: str = "bayes"
    phase: Phase = Phase.DATA
    _seen: tuple[float, float] = (0.0, 0.0)  # (last stat, mtime of the loaded file)

    async def _refresh(self) -> None:
        if self.path is None:
            return
        now = time.monotonic()
        if now - self._seen[0] < RELOAD_INTERVAL:
            return
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            self._seen = (now, self._seen[1])
            return
        if mtime != self._seen[1]:
            with contextlib.suppress(OSError, ValueError):  # unreadable: keep the old model
                self.model = await asyncio.to_thread(BayesModel.load, self.path)
        self._seen = (now, mtime)

    def classify(self, ctx: MessageContext) -> Score:
        return self.model.score(tokenize(mime.view(ctx)))

    async def check(self, ctx: MessageContext) -> CheckResult:
        result = CheckResult()
        await self._refresh()
        if GTUBE in ctx.raw:
            result.add("GTUBE", self.policy.score("GTUBE", 1000.0), "GTUBE test string")
            return result
        if len(ctx.raw) > BIG:
            score = await asyncio.to_thread(self.classify, ctx)
        else:
            score = self.classify(ctx)
        p = shrink(score.probability, len(score.tokens))
        detail = (
            f"p={p:.4f} (counts {score.counts_probability:.3f}, logistic {score.logistic:+.2f}, "
            f"{len(score.tokens)} clues); {score.explain(8)}"
        )
        if p >= 0.5:
            result.add("BAYES_SPAM", self.policy.score("BAYES_SPAM", bayes_score(p)), detail)
        else:
            result.add("BAYES_HAM", self.policy.score("BAYES_HAM", bayes_score(p)), detail)
        return result


class Trainer:
    """Learn / unlearn messages into a writable model file, one writer at a time."""

    _lock = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = path

    def train(self, raw: bytes, is_spam: bool, *, unlearn: bool = False) -> BayesModel:
        tokens = tokenize(mime.parse(raw))
        with self._lock:
            # a fresh object: the shipped model is shared read-only by every pipeline
            if self.path.exists():
                model = BayesModel.load(self.path)
            else:
                model = BayesModel.from_bytes(shipped_model_bytes())
            if unlearn:
                model.unlearn(tokens, is_spam)
            else:
                model.learn(tokens, is_spam)
            model.save(self.path)
        return model
