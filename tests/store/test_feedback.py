"""Learning in the shared database, against a real SQLite file and a real PostgreSQL
server: what one trainer learns another node's classifier uses, learning stays
idempotent, and the counts are exactly those of learning into a model file."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mxflow.checks.bayes import Trainer
from mxflow.checks.classifier import default_model
from mxflow.checks.learning import SharedBayesCheck, SharedModel, SharedTrainer, share_learning
from mxflow.checks.pipeline import FilterPipeline
from mxflow.config.filter import FilterPolicy
from mxflow.mail import MessageContext
from mxflow.store.feedback import FEEDBACK
from mxflow.store.schema import migrate
from mxflow.store.sql import open_database
from tests.filter.helpers import SA_NICE, SA_SPAM, read

NOT_THERE = Path("/nonexistent/bayes.model.gz")  # no model file: the shipped one is the base


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    found = (
        str(tmp_path / "f.sqlite")
        if request.param == "sqlite"
        else str(request.getfixturevalue("pg_url"))
    )
    db = open_database(found)
    migrate(db, [FEEDBACK])
    db.close()
    return found


def test_learning_is_idempotent_and_moves_a_message_between_classes(url: str) -> None:
    trainer = SharedTrainer(NOT_THERE, url)
    spam = read(SA_SPAM / "001")
    once, outcomes = trainer.train_many([spam, spam], True)
    assert outcomes == {"learnt": 1, "already learnt": 1}
    base = default_model()
    assert (once.nspam, once.nham) == (base.nspam + 1, base.nham)
    other = SharedTrainer(NOT_THERE, url)  # another node's trainer
    again, outcomes = other.train_many([spam], True)
    assert outcomes == {"already learnt": 1} and again.counts == once.counts
    moved, outcomes = other.train_many([spam], False)
    assert outcomes == {"relearnt": 1}
    assert (moved.nspam, moved.nham) == (base.nspam, base.nham + 1)
    undone, outcomes = trainer.train_many([spam], False, unlearn=True)
    assert outcomes == {"unlearnt": 1}
    assert (undone.nspam, undone.nham) == (base.nspam, base.nham)
    assert undone.counts == base.counts
    assert trainer.train_many([spam], False, unlearn=True)[1] == {"not learnt": 1}


def test_the_counts_are_those_of_a_model_file(url: str, tmp_path: Path) -> None:
    messages = [read(SA_SPAM / n) for n in ("002", "003")] + [read(SA_NICE / "002")]
    file_trainer = Trainer(tmp_path / "model.gz")
    shared = SharedTrainer(NOT_THERE, url)
    for raw, is_spam in zip(messages, (True, True, False), strict=True):
        from_file = file_trainer.train(raw, is_spam)
        in_db = shared.train(raw, is_spam)
    assert in_db.counts == from_file.counts
    assert (in_db.nham, in_db.nspam) == (from_file.nham, from_file.nspam)
    # a node that only reads the database builds the same model
    reader = SharedModel(open_database(url), default_model())
    built = reader.load()
    assert built.counts == in_db.counts and (built.nham, built.nspam) == (in_db.nham, in_db.nspam)
    assert built.weights.keys() == in_db.weights.keys()
    far = [
        t
        for t, (w, g) in in_db.weights.items()
        if not (math.isclose(built.weights[t][0], w, abs_tol=1e-12))
        or not math.isclose(built.weights[t][1], g, abs_tol=1e-12)
    ]
    assert far == []
    reader.db.close()


async def test_another_nodes_classifier_follows_what_was_learnt(url: str) -> None:
    db = open_database(url)
    pipeline = FilterPipeline(FilterPolicy(checks=["bayes"]), database=db)
    (check,) = pipeline.checks
    assert isinstance(check, SharedBayesCheck)
    raw = read(SA_NICE / "003")
    ctx = MessageContext(client_ip="192.0.2.1", raw=raw)
    before = check.classify(ctx).probability
    SharedTrainer(NOT_THERE, url).train_many([raw] * 1, True)
    await check._refresh()  # the first look reads the database
    after = check.classify(MessageContext(client_ip="192.0.2.1", raw=raw)).probability
    assert after > before
    assert check.model is not default_model()  # a copy: the shipped model is untouched
    generation = check.shared.generation if check.shared else 0
    assert generation == 1
    check._seen = (0.0, 0.0)
    await check._refresh()  # nothing new: the same model object
    assert check.shared is not None and check.shared.generation == 1
    await db.aclose()


def test_share_learning_leaves_other_checks_alone(tmp_path: Path) -> None:
    db = open_database(tmp_path / "x.sqlite")
    pipeline = FilterPipeline(FilterPolicy(checks=["headers", "bayes"]))
    shared = share_learning(pipeline.checks, db)
    assert [type(c).__name__ for c in shared] == ["HeaderCheck", "SharedBayesCheck"]
    db.close()
