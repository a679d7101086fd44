"""The content classifier: tokens, learn / unlearn, scoring, explanation, the shipped model."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from mxflow.checks.bayes import GTUBE, BayesCheck, Trainer, bayes_score
from mxflow.checks.classifier import BayesModel, chi2_combine, default_model, shipped_model_bytes
from mxflow.checks.tokens import tokenize
from mxflow.checks.train import main as train_main
from mxflow.checks.train import train_tokens
from mxflow.config.filter import FilterPolicy
from mxflow.mime import parse
from tests.filter.helpers import SA_NICE, SA_SPAM, context, message, read

ROOT = Path(__file__).resolve().parents[2]


def tokens_of(raw: bytes) -> list[str]:
    return tokenize(parse(raw))


def test_tokens_come_from_decoded_text_subject_urls_and_stripped_html() -> None:
    raw = message(
        "Gr\u00fc\u00dfe aus K\u00f6ln\n",
        subject="=?utf-8?q?Sch=C3=B6ne_Angebote?=",
        html='<p style="display:none">hidden</p><font size="+3">BUY</font> '
        '<a href="http://deals.spam-example.test/x?id=1">now</a>',
    )
    toks = set(tokens_of(raw))
    assert "grüße" in toks and "köln" in toks
    assert "subject:schöne" in toks and "subject:angebote" in toks
    assert "url:spam-example.test" in toks and "url:deals" in toks
    assert {"html:a", "html:font", "html:hidden", "html:fontsize:+"} & toks
    words = [t for t in toks if not t.startswith("shape:")]  # shapes keep header punctuation
    assert not any("<" in t or "href" in t for t in words)  # tags are stripped from words


def test_tokens_for_shapes_case_numbers_and_header_order() -> None:
    raw = message(
        "Only $99.95 for Viagra today, call 555-0123\n",
        extra={"Delivered-To": "collector@example.net", "X-Keywords": "junk"},
    )
    toks = set(tokens_of(raw))
    assert "num:$9.9" in toks and "$99.95" not in toks  # numbers by their shape
    assert "num:9-9" in toks
    assert "viagra" in toks and "c:Viagra" in toks  # case kept beside the lower-case word
    assert "shape:message-id:<a9.a@a.a>" in toks
    assert "hdrorder:from>to" in toks and "hdrorder:to>subject" in toks
    assert "to:count:1" in toks and not any(t.startswith("to:domain:") for t in toks)
    # headers stamped where the mail was collected teach nothing about its sender
    assert not any("delivered-to" in t or "x-keywords" in t for t in toks)
    assert "urlhost:deals.spam-example.test" in tokens_of(
        message("see http://deals.spam-example.test/a/b?x=1 now\n")
    )


def test_legacy_charsets_are_decoded() -> None:
    body = "\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440".encode("koi8-r")
    raw = (
        b"From: a@example.org\r\nSubject: hi\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=koi8-r\r\n\r\n" + body + b"\r\n"
    )
    toks = tokens_of(raw)
    assert "\u043f\u0440\u0438\u0432\u0435\u0442" in toks
    assert "charset:koi8-r" in toks


def test_unknown_charset_does_not_fail() -> None:
    raw = (
        b"From: a@example.org\r\nSubject: x\r\nContent-Type: text/plain; charset=x-no-such\r\n"
        b"\r\nplain words \xff\xfe here\r\n"
    )
    assert "words" in tokens_of(raw)


def test_learn_then_unlearn_restores_the_counts_exactly() -> None:
    model = BayesModel()
    model.learn(["cheap", "pills", "hello"], is_spam=True)
    model.learn(["meeting", "hello"], is_spam=False)
    before = (model.nham, model.nspam, dict(model.counts))
    weight_before = model.weights["cheap"][0]
    model.learn(["cheap", "new-token"], is_spam=False)
    assert model.counts["cheap"] == (1, 1)
    assert model.weights["cheap"][0] < weight_before  # the logistic model moved toward ham
    model.unlearn(["cheap", "new-token"], is_spam=False)
    assert (model.nham, model.nspam, model.counts) == before
    assert "new-token" not in model.counts


def test_model_round_trips_and_is_deterministic(tmp_path: Path) -> None:
    data = [(["b", "a", "ü"], True), (["a", "c"], False), (["c"], False)]
    model = train_tokens(data)
    path = tmp_path / "m.gz"
    model.save(path)
    loaded = BayesModel.load(path)
    assert (loaded.nham, loaded.nspam, loaded.counts) == (2, 1, model.counts)
    assert loaded.weights.keys() == model.weights.keys()
    assert path.read_bytes() == model.to_bytes() == train_tokens(data).to_bytes()
    assert loaded.to_bytes() == model.to_bytes()


def test_scores_are_probabilities_and_agree_with_the_training() -> None:
    data = [(["viagra", "cheap", "click"], True), (["meeting", "agenda", "minutes"], False)]
    model = train_tokens(data * 20)
    spam = model.score(["viagra", "cheap", "unknown"])
    ham = model.score(["meeting", "minutes"])
    assert spam.probability > 0.95 and ham.probability < 0.05
    assert spam.counts_probability > 0.99 and spam.logistic > 0
    assert {t for t, _ in spam.tokens} == {"viagra", "cheap"}
    assert "viagra" in spam.explain()
    assert chi2_combine([]) == 0.5
    assert BayesModel().score(["x"]).probability == 0.5


def test_bayes_score_curve() -> None:
    assert bayes_score(0.5) == 0.0
    assert bayes_score(0.0) == -2.0
    assert bayes_score(0.96) >= 5.0  # alone reaches the junk band
    assert bayes_score(1.0) >= 10.0  # alone reaches the high-confidence band
    assert all(bayes_score(p / 100) <= bayes_score((p + 1) / 100) for p in range(100))


def test_shipped_model_separates_spamassassins_own_test_messages() -> None:
    model = default_model()
    assert model.nham > 1000 and model.nspam > 1000
    nice = [read(p) for p in sorted(SA_NICE.glob("0*"))]
    spam = [read(p) for p in sorted(SA_SPAM.glob("0*"))]
    nice_p = [model.score(tokens_of(r)).probability for r in nice]
    spam_p = [model.score(tokens_of(r)).probability for r in spam]
    assert sum(p < 0.5 for p in nice_p) >= 0.8 * len(nice_p)
    assert sum(p > 0.5 for p in spam_p) >= 0.75 * len(spam_p)


def test_shipped_model_loads_fast_and_make_model_rebuilds_it_byte_for_byte(
    tmp_path: Path,
) -> None:
    started = time.perf_counter()
    BayesModel.from_bytes(shipped_model_bytes())
    assert time.perf_counter() - started < 2.0
    out = tmp_path / "bayes.model.gz"
    assert train_main([str(ROOT / "data" / "corpus"), str(out)]) == 0
    assert out.read_bytes() == shipped_model_bytes()


def test_check_reports_probability_and_top_tokens() -> None:
    check = BayesCheck(FilterPolicy())
    spam = asyncio.run(check.check(context(read(SA_SPAM / "001"))))
    (symbol,) = spam.symbols
    assert symbol.name == "BAYES_SPAM" and symbol.score > 5
    assert symbol.detail.startswith("p=")
    gtube = asyncio.run(check.check(context(message("test " + GTUBE.decode()))))
    assert [s.name for s in gtube.symbols] == ["GTUBE"]


def test_trainer_learns_into_a_writable_copy(tmp_path: Path) -> None:
    path = tmp_path / "node" / "bayes.model.gz"
    raw = message("zyxwvutsr appears in this ham message\n")
    trainer = Trainer(path)
    model = trainer.train(raw, is_spam=False)
    assert path.exists()
    assert model.nham == default_model().nham + 1
    assert model.counts["zyxwvutsr"] == (1, 0)
    assert "zyxwvutsr" not in default_model().counts  # the shipped model is untouched
    again = trainer.train(raw, is_spam=False, unlearn=True)
    assert again.nham == default_model().nham and "zyxwvutsr" not in again.counts


async def test_a_running_check_picks_up_a_retrained_model_file(tmp_path: Path) -> None:
    import mxflow.checks.bayes as bayes_module

    path = tmp_path / "bayes.model.gz"
    raw = message("qwertyzzz asdfgzzz words only this sender uses\n", subject="qwertyzzz")
    check = BayesCheck(FilterPolicy(), default_model(), path)
    before = (await check.check(context(raw))).symbols[0].score
    trainer = Trainer(path)
    for n in range(5):  # five messages: the same one learnt again would count once
        trainer.train(raw.replace(b"sender uses", f"sender uses {n}".encode()), is_spam=True)
    old_interval = bayes_module.RELOAD_INTERVAL
    bayes_module.RELOAD_INTERVAL = 0.0
    try:
        after = (await check.check(context(raw))).symbols[0].score
    finally:
        bayes_module.RELOAD_INTERVAL = old_interval
    assert check.model.nspam == default_model().nspam + 5
    assert after > before
