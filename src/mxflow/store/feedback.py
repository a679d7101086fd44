"""Filter feedback in the shared database: what was learnt, and the learned counts.

Without a shared database a node's trainer rewrites its model file and a `.learnt`
ledger beside it (checks/bayes.py). With one, learning goes here, so what one node learns
(an administrator's "this is spam", a quarantine release, a Junk-folder move) every
node's classifier uses:

* `feedback`: the ledger — each message learnt (the digest of its Message-ID and body)
  and its class. Learning a message twice, or unlearning one never learnt, changes
  nothing; learning it as the other class moves it.
* `token_counts`: per token, the learned change over the base model (the shipped one, or
  the node's `bayes_model` file): ham and spam counts, the logistic weight and its
  AdaGrad sum. Stored as the whole change, not increments, so applying a row twice is
  harmless. Each row carries the generation that last changed it.
* `feedback_state`: one row, the generation (one more per training) and the change of
  the message totals (its bias columns are unused since the classifier lost its intercept).

A node polls the generation; when it moved, it reads the rows changed since the one it
has (`changes_since`) and applies them to its in-memory model (checks/learning.py).
Trainers take turns (an advisory lock), so each computes its update on the latest model.
This module only moves rows; the model arithmetic is the classifier's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mxflow.store.schema import Component, Migration
from mxflow.store.sql import Cursor, Database

CHUNK = 400  # rows or keys per statement: well under both databases' parameter limits

_SCHEMA = """
CREATE TABLE feedback_state (
    id INTEGER PRIMARY KEY,
    generation BIGINT NOT NULL,
    nham BIGINT NOT NULL,
    nspam BIGINT NOT NULL,
    bias {real} NOT NULL,
    bias_g {real} NOT NULL
);
INSERT INTO feedback_state VALUES (1, 0, 0, 0, 0.0, 0.0);
CREATE TABLE feedback (
    digest TEXT PRIMARY KEY,
    class TEXT NOT NULL,
    learnt {real} NOT NULL
);
CREATE TABLE token_counts (
    token TEXT PRIMARY KEY,
    ham BIGINT NOT NULL,
    spam BIGINT NOT NULL,
    weight {real} NOT NULL,
    g {real} NOT NULL,
    generation BIGINT NOT NULL
);
CREATE INDEX token_counts_generation ON token_counts (generation);
"""

FEEDBACK = Component(
    "feedback",
    (
        Migration(
            1,
            "learnt messages, learned token counts, the generation",
            _SCHEMA.format(real="REAL"),
            _SCHEMA.format(real="DOUBLE PRECISION"),
        ),
    ),
)

STATE = "SELECT generation, nham, nspam, bias, bias_g FROM feedback_state WHERE id = 1"


@dataclass(frozen=True)
class LearnedState:
    """The generation, and the change of the totals over the base model."""

    generation: int = 0
    nham: int = 0
    nspam: int = 0
    bias: float = 0.0  # unused since the classifier lost its intercept; kept in the schema
    bias_g: float = 0.0


@dataclass(frozen=True)
class TokenChange:
    """One token's learned change over the base model."""

    token: str
    ham: int
    spam: int
    weight: float
    g: float


def _stored(token: str) -> str:
    """A token as PostgreSQL text can hold it: NUL (which tokens may contain) escaped."""
    return token.replace("\\", "\\\\").replace("\0", "\\0")


def _token(stored: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\0" if m.group(1) == "0" else m.group(1), stored, flags=re.S)


def _state(row: Sequence[object]) -> LearnedState:
    generation, nham, nspam, bias, bias_g = row
    return LearnedState(
        int(str(generation)), int(str(nham)), int(str(nspam)), float(str(bias)), float(str(bias_g))
    )


def state(tx: Cursor) -> LearnedState:
    (row,) = tx.query(STATE)
    return _state(row)


async def generation(db: Database) -> int:
    """The generation only: what a node polls (one small read)."""
    ((found,),) = await db.aquery("SELECT generation FROM feedback_state WHERE id = 1")
    return int(found)


def changes_since(tx: Cursor, since: int) -> list[TokenChange]:
    """The tokens changed by the trainings after generation `since` (0: all of them)."""
    rows = tx.query(
        "SELECT token, ham, spam, weight, g FROM token_counts WHERE generation > ?", (since,)
    )
    return [TokenChange(_token(t), int(h), int(s), float(w), float(g)) for t, h, s, w, g in rows]


def learnt(tx: Cursor, digests: Iterable[str]) -> dict[str, bool]:
    """The ledger's entries for these messages: digest -> learnt as spam."""
    wanted = sorted(set(digests))
    found: dict[str, bool] = {}
    for i in range(0, len(wanted), CHUNK):
        part = wanted[i : i + CHUNK]
        marks = ", ".join("?" * len(part))
        for digest, cls in tx.query(
            f"SELECT digest, class FROM feedback WHERE digest IN ({marks})", part
        ):
            found[str(digest)] = cls == "spam"
    return found


def record(
    tx: Cursor,
    new: LearnedState,
    tokens: Sequence[TokenChange],
    ledger: dict[str, bool | None],
    now: float,
) -> None:
    """Write one training: its tokens and ledger changes (None: unlearnt) at generation
    `new.generation`, and the new totals. The caller holds the trainers' lock."""
    for i in range(0, len(tokens), CHUNK):
        part = tokens[i : i + CHUNK]
        values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(part))
        args: list[object] = []
        for t in part:
            args += [_stored(t.token), t.ham, t.spam, t.weight, t.g, new.generation]
        tx.execute(
            "INSERT INTO token_counts (token, ham, spam, weight, g, generation) VALUES "
            + values
            + " ON CONFLICT (token) DO UPDATE SET ham = excluded.ham, spam = excluded.spam,"
            " weight = excluded.weight, g = excluded.g, generation = excluded.generation",
            args,
        )
    for digest, is_spam in sorted(ledger.items()):
        if is_spam is None:
            tx.execute("DELETE FROM feedback WHERE digest = ?", (digest,))
        else:
            tx.execute(
                "INSERT INTO feedback (digest, class, learnt) VALUES (?, ?, ?) ON CONFLICT"
                " (digest) DO UPDATE SET class = excluded.class, learnt = excluded.learnt",
                (digest, "spam" if is_spam else "ham", now),
            )
    tx.execute(
        "UPDATE feedback_state SET generation = ?, nham = ?, nspam = ?, bias = ?, bias_g = ?"
        " WHERE id = 1",
        (new.generation, new.nham, new.nspam, new.bias, new.bias_g),
    )
