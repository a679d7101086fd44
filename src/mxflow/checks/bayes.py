"""The content classifier as a check: `BAYES_SPAM` / `BAYES_HAM` with the deciding tokens.

The probability maps to a score that alone reaches the junk band from 0.93 and the
high-confidence band from 0.995 (default policy), while a confident ham probability lowers
the score a little. Below 0.93 the classifier cannot junk a message alone, but from 0.6 it
brings it within 1.5 points of the band (3.5 at 0.6, rising to 5 at 0.93), so a message it
leans on is junked when an independent finding agrees (a content rule of content.py, a
header anomaly). That is what carries to mail of another source, where the token model
still ranks well but is rarely sure. The breakpoints were chosen on the pooled 5-fold
scores of data/corpus and on csdmc2010-dev (bench/transfer_accuracy.py), so those figures
(docs/filter.md) are not unseen by the choice; the other half of CSDMC2010, kept out of
the repository, is.
GTUBE, the standard spam test string, is always spam.
Learning goes to the policy's writable model (`filter.bayes_model`); without one the
shipped model is used read-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mxflow import mime
from mxflow.checks.classifier import BayesModel, Score, default_model, shipped_model_bytes
from mxflow.checks.tokens import tokenize
from mxflow.config.filter import FilterPolicy
from mxflow.mail import CheckResult, MessageContext, Phase, message_id_of

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
BIG = 32 * 1024  # from here (about 10 ms of CPU) the classifier runs in a worker thread
# (probability, score) breakpoints, linear in between
SPAM_CURVE = ((0.5, 0.0), (0.6, 3.5), (0.93, 5.0), (0.995, 10.0), (1.0, 12.0))
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
    """Learn / unlearn messages into a writable model file, one writer at a time.

    Beside the model, `<model>.learnt` lists every message learnt (a digest of its
    Message-ID and body, and the class), so learning a message twice, or unlearning one that
    was never learnt, leaves the counts alone, and learning a message as the other class
    first unlearns the old one (as sa-learn does): a user who reports the same mail twice,
    or changes their mind, never skews the model.
    """

    _lock = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ledger = path.with_name(path.name + ".learnt")

    def train(self, raw: bytes, is_spam: bool, *, unlearn: bool = False) -> BayesModel:
        """Learn (or unlearn) one message and save; returns the model as saved."""
        model, _ = self.train_many([raw], is_spam, unlearn=unlearn)
        return model

    def train_many(
        self, messages: Iterable[bytes], is_spam: bool, *, unlearn: bool = False
    ) -> tuple[BayesModel, Counter[str]]:
        """Learn (or unlearn) messages with one load and one save; returns the model and
        how many messages were learnt, relearnt (class changed), unlearnt or left alone."""
        outcomes: Counter[str] = Counter()
        with self._lock:
            # a fresh object: the shipped model is shared read-only by every pipeline
            if self.path.exists():
                model = BayesModel.load(self.path)
            else:
                model = BayesModel.from_bytes(shipped_model_bytes())
            learnt = self._read_ledger()
            for raw in messages:
                outcomes[_apply(model, learnt, raw, is_spam, unlearn)] += 1
            model.save(self.path)
            self._write_ledger(learnt)
        return model, outcomes

    def _read_ledger(self) -> dict[str, bool]:
        if not self.ledger.exists() or not self.path.exists():
            return {}  # without the model file the shipped model starts over: so does this
        entries: dict[str, bool] = {}
        for line in self.ledger.read_text(encoding="ascii").splitlines():
            digest, _, cls = line.partition(" ")
            if digest and cls in ("spam", "ham"):
                entries[digest] = cls == "spam"
        return entries

    def _write_ledger(self, entries: dict[str, bool]) -> None:
        text = "".join(f"{d} {'spam' if s else 'ham'}\n" for d, s in sorted(entries.items()))
        tmp = self.ledger.with_name(self.ledger.name + ".tmp")
        tmp.write_text(text, encoding="ascii")
        os.replace(tmp, self.ledger)


def message_digest(raw: bytes) -> str:
    """What identifies a message for learning: its Message-ID and its body (the header
    lines that relays and filters add on the way do not make it another message)."""
    body = raw.replace(b"\r\n", b"\n")
    end = body.find(b"\n\n")
    body = body[end + 2 :] if end >= 0 else body
    digest = hashlib.sha256(message_id_of(raw).encode("utf-8", "replace") + b"\0" + body)
    return digest.hexdigest()


def _apply(
    model: BayesModel, learnt: dict[str, bool], raw: bytes, is_spam: bool, unlearn: bool
) -> str:
    """One message into `model` and the ledger; returns what was done."""
    digest = message_digest(raw)
    before = learnt.get(digest)
    if unlearn:
        if before is not is_spam:
            return "not learnt"
        model.unlearn(tokenize(mime.parse(raw)), is_spam)
        del learnt[digest]
        return "unlearnt"
    if before is is_spam:
        return "already learnt"
    tokens = tokenize(mime.parse(raw))
    if before is not None:
        model.unlearn(tokens, before)
    model.learn(tokens, is_spam)
    learnt[digest] = is_spam
    return "relearnt" if before is not None else "learnt"
