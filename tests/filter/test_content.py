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


async def test_filler_in_css_keyword_sizes_is_tiny_and_not_tokenized() -> None:
    from mxflow.checks.tokens import tokenize
    from mxflow.mime import parse

    filler = f'<img src="cid:x"><span style="font-size: xx-small">{WORDS}</span>'
    found = await symbols(html_only(filler))
    assert "60 of 60 words" in found["HTML_TINY_TEXT"]
    assert not {w for w in WORDS.split()} & set(tokenize(parse(html_only(filler))))
    small = f"<p>{PROSE}</p><span style='font-size: small'>{WORDS}</span>"
    assert "HTML_TINY_TEXT" not in await symbols(html_only(small))


async def test_links_to_many_made_up_hosts_of_one_domain() -> None:
    hosts = ("9d17", "a70", "8b", "1b1")
    links = "".join(f'<a href="http://{h}.medshop.example/?x={h}">go</a> ' for h in hosts)
    found = await symbols(message(PROSE, html=f"<p>{PROSE}</p>{links}"))
    assert "4 made-up hosts of medshop.example" in found["URL_RANDOM_HOSTS"]
    # numbered mirrors share one shape; named hosts are no machine's invention
    mirrors = " ".join(f"https://img{n}.news.example/a.gif" for n in range(1, 6))
    named = "https://www.news.example/ https://images.news.example/ https://click.news.example/"
    assert "URL_RANDOM_HOSTS" not in await symbols(message(f"{PROSE}\n{mirrors}\n{named}"))
    addresses = " ".join(f"http://10.0.0.{n}/" for n in range(1, 6))
    assert "URL_RANDOM_HOSTS" not in await symbols(message(f"{PROSE}\n{addresses}"))


async def test_headings_scattered_inside_sentences() -> None:
    scattered = (
        "<p>Jay Lake (born <h5>June</h5> 6, 1964) is a writer. Few dare venture from the "
        "coast, and the <h2>Portuguese met numerous defeats</h2> there.</p>"
    )
    found = await symbols(message(PROSE, html=scattered))
    assert found["HTML_HEADING_IN_SENTENCE"] == "2 headings opened inside sentences"
    one = "<p>Jay Lake (born <h5>June</h5> 6, 1964) is a writer.</p>"
    assert "HTML_HEADING_IN_SENTENCE" not in await symbols(message(PROSE, html=one))
    authored = f"<h1>Report</h1><p>{PROSE}</p><h2>Budget</h2><p>As agreed:</p><h2>Next</h2>"
    assert "HTML_HEADING_IN_SENTENCE" not in await symbols(message(PROSE, html=authored))


SALAD = (
    "Anthony signs up Tukulor Karate alone Service and Four people Historical would originally "
    "the still a it While Assembly became the of for with domestic of approximately Church "
    "with by After by example coming February the with Palin coconut voted up The by After "
    "an of outposts oil Volt was focused For with on metres coastal and or was the the "
    "London caretakers diocese the Vancouver of is the in homeless homage India of at antiquity"
)


async def test_word_salad_poisoning_the_classifier() -> None:
    found = await symbols(message(f"Place to hang out http://shop.example/\n\n{SALAD}"))
    assert "word pairs no sentence has" in found["TEXT_WORD_SALAD"]
    # prose, idiom ("log in to", "in and out") and a technical note stay below the bar
    idiom = "Log in to the box, go in and out of the room, with or without the key. " * 3
    technical = "Use the with statement; the is operator and the the typo are two of them. "
    assert "TEXT_WORD_SALAD" not in await symbols(message(f"{PROSE} {idiom} {technical}"))
    longer = " ".join([PROSE] * 40)  # 1,800 words: the pairs must be a share of the text
    assert "TEXT_WORD_SALAD" not in await symbols(message(f"{longer} {SALAD[:200]}"))


async def test_shouting_and_the_advertisement_label() -> None:
    shout = "THIS OFFER IS EXTENDED EXCLUSIVELY TO ALL ACTIVE DUTY AND RETIRED VETERANS. " * 4
    assert "TEXT_SHOUTING" in await symbols(message(shout))
    notice = "SERVER DOWN FOR MAINTENANCE, BACK AT NOON."  # short: a notice, not a pitch
    acronyms = f"{PROSE} The NASA and IETF and HTML and SMTP and DKIM and ARC documents. " * 2
    assert "TEXT_SHOUTING" not in await symbols(message(notice))
    assert "TEXT_SHOUTING" not in await symbols(message(acronyms))
    found = await symbols(message(PROSE, subject="ADV: 2002 Wireless Congress"))
    assert "ADV: 2002" in found["SUBJ_ADV_LABEL"]
    for subject in ("Advice on the budget", "Re: ADV: Wireless Congress", "Adventure"):
        assert "SUBJ_ADV_LABEL" not in await symbols(message(PROSE, subject=subject))


async def test_drug_and_knock_off_words_glued_or_spelt_with_digits() -> None:
    found = await symbols(message(f"{PROSE} Grow YourPenis fast. All Quality Rep1icaWatches."))
    assert found["OBFU_GLUED_WORD"] == "'Penis' glued to the next word"
    assert found["OBFU_DIGIT_FOR_LETTER"] == "'Rep1ica' spells 'replica'"
    assert "OBFU_GLUED_WORD" in await symbols(message(f"{PROSE} RolexWatches at cheap prices"))
    software = f"{PROSE} PowerPoint on FreeBSD; the spills; YouTube and PayPal; WeightWatchers"
    assert await symbols(message(software)) == {}
