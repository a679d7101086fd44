"""The content classifier: tokens, learn / unlearn, scoring, explanation, the shipped model."""

from __future__ import annotations

import asyncio
import gzip
import time
from pathlib import Path

from mxflow.checks.bayes import GTUBE, BayesCheck, Trainer, bayes_score, views_score
from mxflow.checks.classifier import (
    BayesModel,
    chi2_combine,
    default_model,
    shipped_model_bytes,
    split,
)
from mxflow.checks.tokens import is_header_token, tokenize
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


def test_stamps_of_the_receiving_side_and_filter_tags_are_not_tokens() -> None:
    stamps = {
        "X-Barracuda-Spam-Score": "9.69",
        "X-ASG-Debug-ID": "1268467375-079dbb160001",
        "XStatus": "No, score=-15.9 required=4.0",
        "X-AmavisStatus": "No, score=-11.9",
        "Authentication-Results": "mx.example.net; spf=pass",
        "Received-SPF": "pass (example.net: domain of a@example.org)",
        "X-Mozilla-Status": "0001",
        "X-UIDL": "GmailId128bb599a95e11cd",
    }
    toks = set(tokens_of(message(subject="[spam] [SPAM]  Cheap offer", extra=stamps)))
    names = ("barracuda", "x-asg", "xstatus", "amavis", "authentication", "spf", "mozilla", "uidl")
    assert not [t for t in toks if any(name in t for name in names)]
    assert "subject:spam" not in toks and {"subject:cheap", "subject:offer"} <= toks
    # a subject about spam keeps its words: only a tag in front is another filter's verdict
    assert "subject:spam" in tokens_of(message(subject="Re: spam in the queue"))


def test_tokens_fall_into_a_text_view_and_a_header_view() -> None:
    text, headers = split(tokens_of(message("Only $99.95 for pills\n", subject="Deal")))
    assert {"pills", "num:$9.9", "subject:deal"} <= set(text)
    assert {"hdr:from:1", "to:count:1", "shape:message-id:<a9.a@a.a>"} <= set(headers)
    assert not any(is_header_token(t) for t in text) and all(map(is_header_token, headers))


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
    model.learn(["agenda", "hello"], is_spam=False)
    before = (model.nham, model.nspam, dict(model.counts))
    weight_before = model.weights["cheap"][0]
    model.learn(["cheap", "new-token"], is_spam=False)
    assert model.counts["cheap"] == (1, 1)
    assert model.weights["cheap"][0] < weight_before  # the logistic model moved toward ham
    model.unlearn(["cheap", "new-token"], is_spam=False)
    assert (model.nham, model.nspam, model.counts) == before
    assert "new-token" not in model.counts


def test_tokens_in_half_of_both_classes_carry_no_weight_and_there_is_no_intercept() -> None:
    """What an average training message looks like is no evidence: a model trained on three
    spam for each ham scores a message it knows nothing about 0.5, not spam."""
    spam = [(["hdr:from:1", "and", f"offer{i}", "cheap"], True) for i in range(30)]
    ham = [(["hdr:from:1", "and", f"agenda{i}", "minutes"], False) for i in range(10)]
    model = train_tokens(spam + ham)
    assert "and" not in model.weights and "hdr:from:1" not in model.weights
    assert model.weights["cheap"][0] > 0 > model.weights["minutes"][0]
    unknown = model.score(["hdr:from:1", "and", "zebra", "hdr:zebra:1"])
    assert unknown.probability == 0.5
    assert all(view.probability == 0.5 for view in unknown.views)
    assert model.score(["cheap"]).probability > 0.9
    assert model.score(["minutes"]).probability < 0.1


def test_neither_view_junks_a_message_alone() -> None:
    """The text sure it is spam and the headers sure it is ham stay below the junk score, and
    the other way round; both views sure reach it."""
    spam_text = [f"pill{i}" for i in range(12)]
    ham_text = [f"agenda{i}" for i in range(12)]
    spam_headers = [f"hdr:x-bulk{i}:1" for i in range(22)]
    ham_headers = [f"hdr:x-list{i}:1" for i in range(22)]
    model = train_tokens([(spam_text + spam_headers, True), (ham_text + ham_headers, False)] * 40)
    junk = FilterPolicy().junk_score
    text_only, _ = views_score(model.score(spam_text + ham_headers))
    headers_only, _ = views_score(model.score(ham_text + spam_headers))
    both, detail = views_score(model.score(spam_text + spam_headers))
    assert text_only < junk and headers_only < junk
    assert both >= junk and "text 1.000" in detail and "headers 1.000" in detail


def test_a_version_2_model_file_is_scored_by_its_counts(tmp_path: Path) -> None:
    """A node's model learnt before the two views keeps its exact counts; its old weights
    (one view, an intercept) are not mixed into the new model, and it stays a counts model
    when saved and learnt into."""
    lines = ["mxflow-bayes 2 20 20 1.5 3.0"]
    lines += ["pills\t0\t20\t0.9\t2.0", "agenda\t20\t0\t-0.9\t2.0"]
    path = tmp_path / "old.model.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))
    model = BayesModel.load(path)
    assert (model.nham, model.nspam, model.logistic, model.weights) == (20, 20, False, {})
    assert model.counts == {"pills": (0, 20), "agenda": (20, 0)}
    assert model.score(["pills"]).probability > 0.9
    assert model.score(["agenda"]).probability < 0.1
    model.learn(["pills", "cheap"], is_spam=True)
    assert model.weights == {} and model.counts["cheap"] == (0, 1)
    model.save(path)
    assert BayesModel.load(path).logistic is False
    assert gzip.decompress(path.read_bytes()).startswith(b"mxflow-bayes 3 20 21 counts\n")


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
    assert bayes_score(0.0) == -0.5
    assert bayes_score(1.0) < 5.0  # one view alone never reaches the junk band
    assert bayes_score(0.96) + bayes_score(0.96) >= 5.0  # two views that agree do
    assert bayes_score(0.6) + bayes_score(0.6) < 5.0  # leaning is not enough
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
