"""The corpus-independent content rules (check `content`): each symbol on a message built to
have the property, and not on an ordinary message that comes close."""

from __future__ import annotations

import base64

from mxflow.checks.content import DEFAULT_SCORES, ContentCheck
from mxflow.checks.pipeline import FilterPipeline
from mxflow.config.filter import FilterPolicy
from mxflow.mail import Action, MessageContext, Phase
from tests.filter.helpers import SA_NICE, context, message, read

WORDS = " ".join(f"word{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(60))
PROSE = (
    "Thanks for the notes from Tuesday. I went through the budget figures again and the "
    "travel line still looks high to me; could we go over it with Priya before Friday? "
    "The rest of the plan reads well, and the schedule for the second quarter is fine."
)


async def symbols(raw: bytes, **kw: object) -> dict[str, str]:
    result = await ContentCheck(FilterPolicy()).check(context(raw, **kw))
    assert all(s.detail and s.score == DEFAULT_SCORES[s.name] for s in result.symbols)
    return {s.name: s.detail for s in result.symbols}


def html_only(html: str, headers: str = "") -> bytes:
    return (
        "From: Shop <news@shop.example>\r\nTo: bob@contoso.com\r\nSubject: News\r\n"
        f"Message-ID: <h1@shop.example>\r\n{headers}MIME-Version: 1.0\r\n"
        f"Content-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n"
    ).encode()


async def test_an_ordinary_message_fires_no_rule() -> None:
    assert await symbols(message(PROSE)) == {}
    assert await symbols(read(SA_NICE / "001")) == {}


async def test_hidden_text_counts_from_thirty_words_not_a_preheader() -> None:
    hidden = f'<p>{PROSE}</p><div style="display: none">{WORDS}</div>'
    found = await symbols(message(PROSE, html=hidden))
    assert "HTML_HIDDEN_TEXT" in found and "60 words" in found["HTML_HIDDEN_TEXT"]
    preheader = f'<span style="display:none">Your weekly summary is here</span><p>{PROSE}</p>'
    assert "HTML_HIDDEN_TEXT" not in await symbols(message(PROSE, html=preheader))


async def test_image_only_and_html_only_bodies() -> None:
    found = await symbols(html_only('<a href="https://shop.example/"><img src="cid:a"></a>'))
    assert set(found) >= {"HTML_ONLY", "HTML_IMAGE_ONLY"}
    assert "HTML_IMAGE_ONLY" not in await symbols(html_only(f"<p>{PROSE}</p><img src=x>"))


async def test_text_and_html_parts_that_disagree() -> None:
    other = " ".join(f"lorem{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(40))
    found = await symbols(message(WORDS, html=f"<p>{other}</p>"))
    assert "HTML_TEXT_MISMATCH" in found
    assert "HTML_TEXT_MISMATCH" not in await symbols(message(WORDS, html=f"<p>{WORDS}</p>"))


async def test_link_text_naming_another_domain() -> None:
    lie = '<p>Sign in at <a href="https://login.evil.example/pp">www.paypal.com</a></p>'
    found = await symbols(message(PROSE, html=lie))
    assert found["LINK_TEXT_MISMATCH"] == "link text paypal.com, goes to login.evil.example"
    tracked = '<a href="https://click.mailer.example/r?u=1">Read more</a>'
    same = '<a href="https://www.example.org/a">example.org/a</a>'
    assert "LINK_TEXT_MISMATCH" not in await symbols(message(PROSE, html=tracked + same))


async def test_urls_that_hide_where_they_go() -> None:
    body = (
        f"{PROSE}\nhttp://198.51.100.7/update\nhttps://bit.ly/3xYz\n"
        "https://xn--pypal-4ve.example/\nhttps://paypal-secure-login.example/verify\n"
    )
    found = await symbols(message(body))
    assert {"URL_IP_LITERAL", "URL_SHORTENER", "URL_PUNYCODE", "URL_LOOKALIKE"} <= set(found)
    assert "imitates paypal" in found["URL_LOOKALIKE"]
    plain = f"{PROSE}\nhttps://www.paypal.com/signin https://purchase.example/ http://127.0.0.1/"
    assert await symbols(message(plain)) == {}


async def test_obfuscated_words() -> None:
    zero_width = "fr\u200bee mo\u200bney ca\u200bsh"
    found = await symbols(message(f"{PROSE} Buy V1agra from p\u0430ypal now {zero_width}"))
    assert found["OBFU_DIGIT_FOR_LETTER"] == "'V1agra' spells 'viagra'"
    assert "OBFU_MIXED_SCRIPT" in found and "OBFU_ZERO_WIDTH" in found
    science = f"{PROSE} 5 μg of β-carotene, mp3 and b2b and x86, Ελληνικά, Москва"
    assert await symbols(message(science)) == {}


async def test_password_forms_and_attachments_that_are_only_a_form() -> None:
    form = '<form action="https://collect.example/p"><input type="password" name="p"></form>'
    assert "PHISH_PASSWORD_FORM" in await symbols(message(PROSE, html=f"<p>{PROSE}</p>{form}"))
    page = f"<html><body>Sign in to view the invoice{form}</body></html>".encode()
    found = await symbols(message(PROSE, attachments=[("invoice.html", "text/html", page)]))
    assert "ATTACH_HTML_FORM" in found
    redirect = b'<meta http-equiv="refresh" content="0; url=https://x.example/">'
    found = await symbols(message(PROSE, attachments=[("fax.htm", "text/html", redirect)]))
    assert "ATTACH_HTML_REDIRECT" in found
    pdf = b"%PDF-1.4\n1 0 obj << /Type /Page /Annots [<< /A << /URI (https://x.example/) >> >>]"
    found = await symbols(message(PROSE, attachments=[("scan.pdf", "application/pdf", pdf)]))
    assert "ATTACH_PDF_LINK_ONLY" in found


async def test_reply_to_and_display_names() -> None:
    diverted = message(PROSE, sender="ceo@contoso-partner.example",
                       extra={"Reply-To": "ceo.office@gmail.com"})  # fmt: skip
    assert "REPLYTO_FREEMAIL" in await symbols(diverted)
    listed = message(PROSE, extra={"Reply-To": "list@lists.example", "List-Id": "<l.example>"})
    assert await symbols(listed) == {}
    brand = message(PROSE).replace(b"From: Ann Example", b"From: PayPal Service")
    assert "FROM_NAME_BRAND" in await symbols(brand)
    own = message(PROSE).replace(b"From: Ann Example", b"From: Contoso IT Helpdesk")
    found = await symbols(own, rcpt_tos=["bob@contoso.com"])
    assert "contoso.com" in found["FROM_NAME_OWN_ORG"]


async def test_fraud_and_pharmacy_vocabulary() -> None:
    fraud = (
        "URGENT: you have won a prize. Wire transfer of 2 million dollars to your bank "
        "account; act now, respond immediately, this offer expires within 24 hours."
    )
    found = await symbols(message(fraud))
    assert {"LEX_MONEY", "LEX_URGENCY", "LEX_FRAUD_COMBO"} <= set(found)
    assert "LEX_PHARMA" in await symbols(message(f"{PROSE} Cheap viagra and cialis pills"))
    assert await symbols(message(f"{PROSE} The loan for the new office is due.")) == {}


async def test_encoding_tricks_and_bulk_without_list_headers() -> None:
    text = base64.b64encode(b"Cheap watches, click the link below.\r\n").decode()
    raw = (
        "From: a@shop.example\r\nTo: bob@contoso.com\r\n"
        "Subject: =?utf-8?B?" + base64.b64encode(b"Hello friend").decode() + "?=\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        f"{text}\r\n"
    ).encode()
    assert {"B64_SHORT_ASCII", "SUBJ_ENCODED_ASCII"} <= set(await symbols(raw))
    bulk = f"{PROSE}\nTo unsubscribe from this mailing list, reply REMOVE."
    assert "BULK_NO_LIST_HEADERS" in await symbols(message(bulk))
    managed = message(bulk, extra={"List-Unsubscribe": "<mailto:leave@lists.example>"})
    assert "BULK_NO_LIST_HEADERS" not in await symbols(managed)


async def test_the_rules_run_in_the_default_pipeline_and_can_be_reweighted() -> None:
    lie = '<a href="https://login.evil.example/pp">www.paypal.com</a>'
    raw = message(f"{PROSE}\nhttp://198.51.100.7/x", html=f"<p>{PROSE}</p>{lie}")
    verdict = await FilterPipeline(FilterPolicy()).evaluate(context(raw), Phase.DATA)
    assert {"LINK_TEXT_MISMATCH", "URL_IP_LITERAL"} <= {s.name for s in verdict.symbols}
    policy = FilterPolicy(scores={"LINK_TEXT_MISMATCH": 20.0})
    verdict = await FilterPipeline(policy).evaluate(context(raw), Phase.DATA)
    assert verdict.action != Action.DELIVER
    off = FilterPolicy(checks=tuple(c for c in FilterPolicy().checks if c != "content"))
    verdict = await FilterPipeline(off).evaluate(MessageContext("192.0.2.10", raw=raw), Phase.DATA)
    assert "LINK_TEXT_MISMATCH" not in {s.name for s in verdict.symbols}


async def test_filler_in_footnote_size_and_pharmacy_hosts() -> None:
    filler = f'<a href="https://pills-shop.example/"><img src="cid:x"></a>' \
             f'<font style="font-size: 10px">{WORDS}</font>'  # fmt: skip
    found = await symbols(html_only(filler))
    assert "60 of 60 words" in found["HTML_TINY_TEXT"]
    assert "'pill'" in found["URL_PHARMA_HOST"]
    footer = f"<p>{PROSE} {PROSE}</p><p style='font-size:9px'>{PROSE}</p>"
    found = await symbols(html_only(footer + '<a href="https://techspecialist.example/">x</a>'))
    assert "HTML_TINY_TEXT" not in found and "URL_PHARMA_HOST" not in found


def test_the_classifier_reads_only_what_the_reader_sees() -> None:
    from mxflow.checks.tokens import tokenize
    from mxflow.mime import parse

    planted = (
        "<p>Cheap watches here</p><div style='display:none'>quarterly minutes budget</div>"
        "<font style='font-size: 8px'>agenda colleague</font><p>Order today</p>"
    )
    tokens = set(tokenize(parse(html_only(planted))))
    assert {"cheap", "watches", "order", "today"} <= tokens
    assert not {"quarterly", "minutes", "budget", "agenda", "colleague"} & tokens
