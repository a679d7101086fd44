"""Content rules that need no training corpus: one check, `content`, many symbols.

The token model knows the mail it was trained on; a site's mail is never that mail. These
rules key on what spam and phishing must do to work — hide words, lie about links, borrow a
brand, hurry the reader, dodge a content filter — not on anything one corpus happens to have
(its dates, its mailers). Each rule module explains why its symbols mark spam:

    body.py         HTML-only / image-only bodies, text and HTML parts that disagree, hidden
                    text, headings scattered inside sentences
    links.py        link text naming another domain, IP-literal / shortener / punycode /
                    look-alike URLs, many made-up hosts of one domain
    obfuscation.py  mixed scripts, zero-width characters, digit-for-letter spellings, drug
                    and knock-off words glued to their neighbours
    phishing.py     password forms, HTML/PDF attachments that are only a form or a link,
                    Reply-To at a free-mail provider, display names claiming a brand or the
                    recipient's own organisation
    lexicon.py      money / urgency / credential phrases
    prose.py        word salad (words in an order no sentence has: Bayes poisoning),
                    shouting, the "ADV:" label
    encoding.py     base64 of short ASCII text, ASCII subjects as encoded words, text not in
                    its charset, unsubscribe text without list headers

Every symbol's default score is in its module's SCORES; `[filter] scores` overrides any of
them. Everything the rules read comes from `contentdoc.Document` (linear in the message's
size); a big message is analysed in a worker thread, so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from mxflow import mime
from mxflow.checks import body, encoding, lexicon, links, obfuscation, phishing, prose
from mxflow.checks.contentdoc import Document, Finding
from mxflow.config.filter import FilterPolicy
from mxflow.mail import CheckResult, MessageContext, Phase

DEFAULT_SCORES: dict[str, float] = {
    **body.SCORES,
    **links.SCORES,
    **obfuscation.SCORES,
    **phishing.SCORES,
    **lexicon.SCORES,
    **prose.SCORES,
    **encoding.SCORES,
}
BIG = 32 * 1024  # bytes from which the rules run in a worker thread (as bayes.py)


def analyse(view: mime.MimeView, raw: bytes, recipients: list[str]) -> list[Finding]:
    """Every rule's findings for one message."""
    doc = Document.build(view, recipients)
    return [
        *body.findings(doc),
        *links.findings(doc),
        *obfuscation.findings(doc),
        *phishing.findings(doc),
        *lexicon.findings(doc),
        *prose.findings(doc),
        *encoding.findings(doc, raw),
    ]


@dataclass
class ContentCheck:
    """The corpus-independent content rules as one check (`[filter] checks` name `content`)."""

    policy: FilterPolicy
    name: str = "content"
    phase: Phase = Phase.DATA

    def inspect(self, ctx: MessageContext) -> CheckResult:
        result = CheckResult()
        for found in analyse(mime.view(ctx), ctx.raw, list(ctx.rcpt_tos)):
            default = DEFAULT_SCORES[found.symbol]
            result.add(found.symbol, self.policy.score(found.symbol, default), found.detail)
        return result

    async def check(self, ctx: MessageContext) -> CheckResult:
        if len(ctx.raw) > BIG:
            return await asyncio.to_thread(self.inspect, ctx)
        return self.inspect(ctx)
