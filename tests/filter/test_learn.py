"""Learning from a site's own mail: `mxflow filter learn` over files, Maildirs and mbox, and
the ledger that keeps repeated or mistaken reports from skewing the model."""

from __future__ import annotations

import mailbox
from pathlib import Path

from mxflow.checks.bayes import Trainer, message_digest
from mxflow.checks.classifier import BayesModel
from tests.filter.helpers import SA_NICE, SA_SPAM, read
from tests.filter.test_cli import mxflow


def test_learning_a_message_twice_counts_it_once(tmp_path: Path) -> None:
    trainer = Trainer(tmp_path / "model.gz")
    raw = read(SA_SPAM / "001")
    once = trainer.train(raw, True)
    twice, outcomes = trainer.train_many([raw], True)
    assert outcomes == {"already learnt": 1}
    assert (twice.nspam, twice.nham) == (once.nspam, once.nham)
    assert twice.counts == once.counts


def test_unlearning_a_message_never_learnt_changes_nothing(tmp_path: Path) -> None:
    trainer = Trainer(tmp_path / "model.gz")
    before = trainer.train(read(SA_NICE / "001"), False)
    after, outcomes = trainer.train_many([read(SA_SPAM / "002")], True, unlearn=True)
    assert outcomes == {"not learnt": 1}
    assert after.counts == before.counts and after.nspam == before.nspam
    # unlearning what was learnt undoes the counts exactly, and only once
    undone, first = trainer.train_many([read(SA_NICE / "001")], False, unlearn=True)
    again, second = trainer.train_many([read(SA_NICE / "001")], False, unlearn=True)
    assert first == {"unlearnt": 1} and second == {"not learnt": 1}
    assert undone.counts == again.counts and undone.nham == before.nham - 1


def test_learning_the_other_class_moves_the_message(tmp_path: Path) -> None:
    trainer = Trainer(tmp_path / "model.gz")
    raw = read(SA_SPAM / "003")
    as_ham = trainer.train(raw, False)
    as_spam, outcomes = trainer.train_many([raw], True)
    assert outcomes == {"relearnt": 1}
    assert (as_spam.nham, as_spam.nspam) == (as_ham.nham - 1, as_ham.nspam + 1)


def test_the_digest_ignores_headers_added_on_the_way() -> None:
    raw = read(SA_SPAM / "001")
    stamped = b"X-Spam-Flag: YES\r\nReceived: from relay\r\n" + raw
    assert message_digest(stamped) == message_digest(raw)
    assert message_digest(raw) != message_digest(read(SA_SPAM / "002"))


def test_learn_command_reads_an_mbox_and_a_maildir(tmp_path: Path) -> None:
    box = tmp_path / "junk.mbox"
    mbox = mailbox.mbox(box)  # as a mail client writes one (">From " escaping included)
    for name in ("001", "002"):
        mbox.add((SA_SPAM / name).read_bytes())
    mbox.close()
    model = tmp_path / "model.gz"
    result = mxflow("filter", "learn", "--spam", "--model", str(model), str(box))
    assert result.returncode == 0, result.stderr
    assert "learnt 2 message(s) as spam" in result.stdout
    nspam = BayesModel.load(model).nspam
    again = mxflow("filter", "learn", "--spam", "--model", str(model), str(box))
    assert "learnt 0 message(s) as spam (2 already learnt)" in again.stdout
    assert BayesModel.load(model).nspam == nspam

    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "cur" / "1.host:2,S").write_bytes((SA_NICE / "001").read_bytes())
    (maildir / "new" / "2.host").write_bytes((SA_NICE / "002").read_bytes())
    ham = mxflow("filter", "learn", "--ham", "--model", str(model), str(maildir))
    assert ham.returncode == 0, ham.stderr
    assert "learnt 2 message(s) as ham" in ham.stdout
