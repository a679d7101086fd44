"""The statistical content classifier: two views of a message, each token counts plus a
logistic model, explained.

A message's tokens (tokens.py) fall into two views: what the sender wrote (the subject, the
text, its links and HTML) and how the mail is built (the header section, the MIME
structure). Each view is scored on its own, and bayes.py adds up what each view says with a
bounded score, so neither view junks a message by itself: on mail of a source the model
never saw, one view is often sure and wrong (a site's ham written and relayed differently
from the training ham), while the two rarely agree by accident.

Per view, two models of the same tokens are combined. (1) Counts — per token, in how many
ham and spam messages it was seen — scored by Gary Robinson's method as SpamBayes uses it
(a smoothed spam probability per token, the most decisive ones combined by Fisher's
chi-square). They make learning and unlearning exact and incremental and give the
explanation an administrator reads. (2) A logistic regression over the same binary tokens
(weights trained by AdaGrad; `make model` fits it in fixed-seed passes over the corpus)
which, being discriminative, ranks far better at a low false-positive rate. The view's
probability is sigmoid(z_logistic + MIX * logit(p_counts)).

The logistic model has no intercept and ignores tokens found in at least half of both
classes' messages (`hdr:from:1`, `and`): with them it learnt what an average training
message looks like — its length, the share of each class — and read a message from
elsewhere, whose words it does not know, as whatever that average leaned to (trained on a
mailing-list corpus, every other kind of mail leaned to spam). Without them a message the
model knows nothing about is 0.5, as it should be.

Learning a message updates the counts exactly and takes `ONLINE_STEPS` AdaGrad steps on it;
unlearning removes the counts exactly and reverses one step (approximate by nature).
Training is deterministic (sorted input, fixed seed), so `make model` rebuilds the shipped
file byte for byte.

File format: gzip (mtime 0) of UTF-8 text, a header line `mxflow-bayes 3 NHAM NSPAM KIND`
(KIND `logistic`, or `counts` for a model scored by its counts alone), then `token TAB ham
TAB spam TAB weight TAB g` per token in sorted order (g is the token's AdaGrad sum of
squared gradients; a token never stepped has weight 0 and g 1e-08). A version 2 file (one
view, with an intercept: a node's model learnt before the views) is read for its counts,
which are exact, and kept a `counts` model, learning counts only: its weights belong to a
model this one no longer is. Starting again from the shipped model (removing the node's
model file) or retraining from a corpus gives back the logistic part.
"""

from __future__ import annotations

import functools
import gzip
import io
import math
import os
import random
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from mxflow.checks.tokens import is_header_token

MAGIC = "mxflow-bayes 3"
OLD_MAGIC = "mxflow-bayes 2"
VIEWS = ("text", "headers")
UNKNOWN_WORD_STRENGTH = 0.45  # Robinson's s: how much the prior 0.5 weighs
UNKNOWN_WORD_PROB = 0.5
MIN_PROB_STRENGTH = 0.1  # ignore tokens with |p - 0.5| below this
MAX_DISCRIMINATORS = 150  # per view
UNIVERSAL = 0.5  # a token in this share of both classes' messages tells them not apart
MIX = 0.2  # weight of the counts' log-odds beside the logistic model's
ETA = 1.0  # AdaGrad learning rate
EPOCHS = 10
SEED = 7
ONLINE_STEPS = 3
_G0 = 1e-8
_NO_G = f"{_G0:.6g}"  # how a token without a weight is written
_LN2 = math.log(2.0)


@dataclass(frozen=True)
class ViewScore:
    """What one view (text or headers) says: its probability, its parts, its clues."""

    probability: float = 0.5
    counts_probability: float = 0.5
    logistic: float = 0.0  # z of the view's logistic model
    clues: list[tuple[str, float]] = field(default_factory=list)  # token, its spam probability


@dataclass(frozen=True)
class Score:
    """A message's spam probability, its parts, and the deciding tokens.

    `probability` is the views' mean log-odds over the views with any evidence (for
    ranking and reports); bayes.py scores each view of `views` on its own."""

    probability: float
    tokens: list[tuple[str, float]]  # counts clues of both views, most decisive first
    counts_probability: float = 0.5
    logistic: float = 0.0  # z of the logistic models, summed over the views
    views: tuple[ViewScore, ...] = ()

    def explain(self, n: int = 10) -> str:
        return ", ".join(f"{token} {prob:.2f}" for token, prob in self.tokens[:n])


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))


def _logit(p: float) -> float:
    p = min(max(p, 1e-9), 1.0 - 1e-9)
    return math.log(p / (1.0 - p))


def split(tokens: Iterable[str]) -> tuple[list[str], list[str]]:
    """The distinct tokens of each view, sorted: (text, headers)."""
    text: list[str] = []
    headers: list[str] = []
    for token in sorted(set(tokens)):
        (headers if is_header_token(token) else text).append(token)
    return text, headers


@dataclass
class BayesModel:
    """Per-token ham/spam document counts, logistic weights, and the message totals.

    `logistic` is False for a model read from a version 2 file: scored by its counts."""

    nham: int = 0
    nspam: int = 0
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # token -> (ham, spam)
    weights: dict[str, tuple[float, float]] = field(default_factory=dict)  # token -> (w, g)
    logistic: bool = True

    def learn(self, tokens: Iterable[str], is_spam: bool, *, online: bool = True) -> None:
        """Count one message's (distinct) tokens as ham or spam, and step the weights."""
        views = split(tokens)
        self._add([*views[0], *views[1]], is_spam, 1)
        if online and self.logistic:
            for _ in range(ONLINE_STEPS):
                for view in views:
                    self.step(view, is_spam)

    def unlearn(self, tokens: Iterable[str], is_spam: bool) -> None:
        """Undo `learn` of the same message: counts exactly, weights by one reversed step."""
        views = split(tokens)
        self._add([*views[0], *views[1]], is_spam, -1)
        if self.logistic:
            for view in views:
                self.step(view, is_spam, sign=-1.0)

    def _add(self, tokens: list[str], is_spam: bool, delta: int) -> None:
        if is_spam:
            self.nspam = max(0, self.nspam + delta)
        else:
            self.nham = max(0, self.nham + delta)
        counts = self.counts
        for token in tokens:
            ham, spam = counts.get(token, (0, 0))
            if is_spam:
                spam = max(0, spam + delta)
            else:
                ham = max(0, ham + delta)
            if ham or spam:
                counts[token] = (ham, spam)
            else:
                counts.pop(token, None)

    def informative(self, tokens: list[str]) -> list[str]:
        """`tokens` without those seen in at least `UNIVERSAL` of both classes' messages."""
        if not self.nham or not self.nspam:
            return tokens
        ham_bar, spam_bar = UNIVERSAL * self.nham, UNIVERSAL * self.nspam
        counts = self.counts
        out = []
        for token in tokens:
            found = counts.get(token)
            if found is None or found[0] < ham_bar or found[1] < spam_bar:
                out.append(token)
        return out

    def _z(self, tokens: list[str]) -> tuple[float, float, list[str]]:
        """z of one view's (distinct) tokens, the length scale, and the tokens that count."""
        scale = 1.0 / math.sqrt(len(tokens) + 1)
        counted = self.informative(tokens)
        weights = self.weights
        total = 0.0
        for token in counted:
            found = weights.get(token)
            if found is not None:
                total += found[0]
        return scale * total, scale, counted

    def step(self, tokens: list[str], is_spam: bool, sign: float = 1.0) -> None:
        """One AdaGrad step of the logistic model on one view of one message (distinct,
        sorted tokens)."""
        z, scale, counted = self._z(tokens)
        g_token = (_sigmoid(z) - (1.0 if is_spam else 0.0)) * scale
        g_square = g_token * g_token
        weights = self.weights
        for token in counted:
            w, g = weights.get(token, (0.0, _G0))
            g += g_square
            weights[token] = (w - sign * ETA * g_token / math.sqrt(g), g)

    def fit(self, data: list[tuple[list[str], bool]], epochs: int = EPOCHS) -> None:
        """Train the logistic models in `epochs` passes, in a fixed-seed shuffled order."""
        prepared = [(split(tokens), is_spam) for tokens, is_spam in data]
        order = list(range(len(prepared)))
        rng = random.Random(SEED)
        for _ in range(epochs):
            rng.shuffle(order)
            for i in order:
                views, is_spam = prepared[i]
                for view in views:
                    self.step(view, is_spam)

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

    def _clues(self, tokens: list[str]) -> list[tuple[float, str, float]]:
        """The view's most decisive tokens by their counts: (strength, token, probability)."""
        clues: list[tuple[float, str, float]] = []
        for token in tokens:
            prob = self.token_probability(token)
            if prob is None:
                continue
            strength = abs(prob - 0.5)
            if strength >= MIN_PROB_STRENGTH:
                clues.append((strength, token, prob))
        clues.sort(key=lambda c: (-c[0], c[1]))
        return clues[:MAX_DISCRIMINATORS]

    def score_view(self, tokens: list[str]) -> ViewScore:
        """One view's probability from its distinct, sorted tokens (0.5 without evidence)."""
        top = self._clues(tokens)
        counts_p = chi2_combine([prob for _, _, prob in top])
        clues = [(t, p) for _, t, p in top]
        if not self.logistic or not self.weights:
            return ViewScore(counts_p, counts_p, 0.0, clues)
        z = self._z(tokens)[0]
        return ViewScore(_sigmoid(z + MIX * _logit(counts_p)), counts_p, z, clues)

    def score(self, tokens: Iterable[str]) -> Score:
        """The spam probability of a message with these tokens (0.5 when the model is empty)."""
        views = tuple(self.score_view(view) for view in split(tokens))
        merged = sorted(
            (clue for view in views for clue in view.clues), key=lambda c: (-abs(c[1] - 0.5), c[0])
        )
        odds = [_logit(v.probability) for v in views if v.clues or v.logistic]
        probability = _sigmoid(sum(odds) / len(odds)) if odds else 0.5
        return Score(
            probability,
            merged,
            chi2_combine([p for _, p in merged[:MAX_DISCRIMINATORS]]),
            sum(v.logistic for v in views),
            views,
        )

    def to_bytes(self) -> bytes:
        """The model as a deterministic gzip file."""
        text = io.StringIO()
        kind = "logistic" if self.logistic else "counts"
        text.write(f"{MAGIC} {self.nham} {self.nspam} {kind}\n")
        weights = self.weights if self.logistic else {}
        for token in sorted(self.counts.keys() | weights.keys()):
            ham, spam = self.counts.get(token, (0, 0))
            w, g = weights.get(token, (0.0, _G0))
            text.write(f"{token}\t{ham}\t{spam}\t{w:.6g}\t{g:.6g}\n")
        buffer = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=6) as f:
            f.write(text.getvalue().encode("utf-8"))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> BayesModel:
        text = gzip.decompress(data).decode("utf-8")
        header, _, body = text.partition("\n")
        parts = header.split(" ")
        magic = " ".join(parts[:2])
        current = magic == MAGIC and len(parts) == 5 and parts[4] in ("logistic", "counts")
        if not current and not (magic == OLD_MAGIC and len(parts) == 6):
            raise ValueError(f"not an mxflow model (header {header[:40]!r})")
        logistic = current and parts[4] == "logistic"
        model = cls(int(parts[2]), int(parts[3]), logistic=logistic)
        counts = model.counts
        weights = model.weights
        for line in body.splitlines():
            token, ham, spam, w, g = line.rsplit("\t", 4)
            if ham != "0" or spam != "0":
                counts[token] = (int(ham), int(spam))
            if logistic and (w != "0" or g != _NO_G):  # a token never stepped has none
                weights[token] = (float(w), float(g))
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
