"""The statistical content classifier: token counts, Robinson-Fisher combining, explanations.

A counts model (per token: in how many ham and spam messages it was seen) keeps learning
and unlearning exact and incremental — releasing a quarantined message trains it as ham,
an administrator's "this is spam" as spam — and stays deterministic, so `make model`
rebuilds the shipped file byte for byte. Scoring follows Gary Robinson's method as
SpamBayes uses it: a smoothed spam probability per token, the most decisive tokens
combined by Fisher's chi-square, which gives a probability near 0 or 1 when the evidence
agrees and near 0.5 when it conflicts. The tokens that decided are kept for the
explanation.

File format: gzip (mtime 0) of UTF-8 text, a header line `mxflow-bayes 1 NHAM NSPAM`, then
`token TAB ham TAB spam` per token in sorted order.
"""

from __future__ import annotations

import functools
import gzip
import io
import math
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

MAGIC = "mxflow-bayes 1"
UNKNOWN_WORD_STRENGTH = 0.45  # Robinson's s: how much the prior 0.5 weighs
UNKNOWN_WORD_PROB = 0.5
MIN_PROB_STRENGTH = 0.1  # ignore tokens with |p - 0.5| below this
MAX_DISCRIMINATORS = 150
_LN2 = math.log(2.0)


@dataclass(frozen=True)
class Score:
    """A message's spam probability and the tokens that decided it (strongest first)."""

    probability: float
    tokens: list[tuple[str, float]]

    def explain(self, n: int = 10) -> str:
        return ", ".join(f"{token} {prob:.2f}" for token, prob in self.tokens[:n])


@dataclass
class BayesModel:
    """Per-token document counts for ham and spam, and the message totals."""

    nham: int = 0
    nspam: int = 0
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # token -> (ham, spam)

    def learn(self, tokens: Iterable[str], is_spam: bool) -> None:
        """Count one message's (distinct) tokens as ham or spam."""
        self._add(tokens, is_spam, 1)

    def unlearn(self, tokens: Iterable[str], is_spam: bool) -> None:
        """Undo `learn` of the same message; counts never go below zero."""
        self._add(tokens, is_spam, -1)

    def _add(self, tokens: Iterable[str], is_spam: bool, delta: int) -> None:
        if is_spam:
            self.nspam = max(0, self.nspam + delta)
        else:
            self.nham = max(0, self.nham + delta)
        counts = self.counts
        for token in set(tokens):
            ham, spam = counts.get(token, (0, 0))
            if is_spam:
                spam = max(0, spam + delta)
            else:
                ham = max(0, ham + delta)
            if ham or spam:
                counts[token] = (ham, spam)
            else:
                counts.pop(token, None)

    def token_probability(self, token: str) -> float | None:
        """Robinson's f(w): the smoothed probability that a message with `token` is spam."""
        found = self.counts.get(token)
        if found is None or not self.nham or not self.nspam:
            return None
        ham, spam = found
        hamratio = ham / self.nham
        spamratio = spam / self.nspam
        prob = spamratio / (hamratio + spamratio)
        n = ham + spam
        s = UNKNOWN_WORD_STRENGTH
        return (s * UNKNOWN_WORD_PROB + n * prob) / (s + n)

    def score(self, tokens: Iterable[str]) -> Score:
        """The spam probability of a message with these tokens (0.5 when the model is empty)."""
        clues: list[tuple[float, str, float]] = []
        for token in set(tokens):
            prob = self.token_probability(token)
            if prob is None:
                continue
            strength = abs(prob - 0.5)
            if strength >= MIN_PROB_STRENGTH:
                clues.append((strength, token, prob))
        clues.sort(key=lambda c: (-c[0], c[1]))
        top = clues[:MAX_DISCRIMINATORS]
        probability = chi2_combine([prob for _, _, prob in top])
        return Score(probability, [(token, prob) for _, token, prob in top])

    def to_bytes(self) -> bytes:
        """The model as a deterministic gzip file."""
        text = io.StringIO()
        text.write(f"{MAGIC} {self.nham} {self.nspam}\n")
        for token in sorted(self.counts):
            ham, spam = self.counts[token]
            text.write(f"{token}\t{ham}\t{spam}\n")
        buffer = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as f:
            f.write(text.getvalue().encode("utf-8"))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> BayesModel:
        text = gzip.decompress(data).decode("utf-8")
        header, _, body = text.partition("\n")
        parts = header.split(" ")
        if " ".join(parts[:2]) != MAGIC or len(parts) != 4:
            raise ValueError(f"not an mxflow model (header {header[:40]!r})")
        model = cls(int(parts[2]), int(parts[3]))
        counts = model.counts
        for line in body.splitlines():
            token, ham, spam = line.rsplit("\t", 2)
            counts[token] = (int(ham), int(spam))
        return model

    def save(self, path: Path) -> None:
        """Write atomically (temp file, fsync, rename), so a crash never leaves half a model."""
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.to_bytes()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> BayesModel:
        return cls.from_bytes(path.read_bytes())


def shipped_model_bytes() -> bytes:
    """The model shipped in the package (trained on the vendored corpus by `make model`)."""
    return resources.files("mxflow.data").joinpath("bayes.model.gz").read_bytes()


@functools.cache
def default_model() -> BayesModel:
    """The shipped model, loaded once per process; treat it as read-only."""
    return BayesModel.from_bytes(shipped_model_bytes())


def chi2_combine(probs: list[float]) -> float:
    """Fisher's combining of token probabilities, as SpamBayes does it; 0.5 for no evidence."""
    if not probs:
        return 0.5
    h = s = 1.0
    hexp = sexp = 0
    for prob in probs:
        s *= 1.0 - prob
        h *= prob
        if s < 1e-200:
            s, e = math.frexp(s)
            sexp += e
        if h < 1e-200:
            h, e = math.frexp(h)
            hexp += e
    ln_s = math.log(s) + sexp * _LN2
    ln_h = math.log(h) + hexp * _LN2
    n = len(probs)
    spam = 1.0 - _chi2q(-2.0 * ln_s, 2 * n)
    ham = 1.0 - _chi2q(-2.0 * ln_h, 2 * n)
    return (spam - ham + 1.0) / 2.0


def _chi2q(x2: float, v: int) -> float:
    """P(chi-square with v degrees of freedom >= x2), v even."""
    m = x2 / 2.0
    total = term = math.exp(-m)
    for i in range(1, v // 2):
        term *= m / i
        total += term
    return min(total, 1.0)
