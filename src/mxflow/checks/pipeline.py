"""The filter: the policy's checks, run per phase, combined into one verdict.

`FilterPipeline` is what the SMTP server calls (the `Filter` protocol). The checks of a
phase run concurrently, each under `policy.check_timeout`: a slow DNS answer or a check
that crashes adds a `<CHECK>_TIMEOUT` / `<CHECK>_ERROR` symbol (score 0) and never loses
the message. The DATA verdict sums every phase — the connection and envelope results are
kept on the context when those phases ran, and run then when they did not (as for
`mxflow filter check`) — so the score an administrator reads is the whole story. Without
a resolver the DNS-based checks are skipped and `DNS_CHECKS_SKIPPED` says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import dns.asyncresolver

from mxflow import mime
from mxflow.auth.policy import AuthPolicy
from mxflow.checks.attachments import AttachmentCheck
from mxflow.checks.base import Check
from mxflow.checks.bayes import BayesCheck, load_model
from mxflow.checks.clamav import ClamavCheck
from mxflow.checks.classifier import BayesModel
from mxflow.checks.connection import DnsblCheck, FcrdnsCheck, HeloCheck, RateLimiter
from mxflow.checks.content import ContentCheck
from mxflow.checks.headers import HeaderCheck
from mxflow.checks.learning import share_learning
from mxflow.checks.lists import IpListCheck, SenderListCheck
from mxflow.checks.rspamd import RspamdCheck
from mxflow.checks.sender_auth import SenderAuthCheck
from mxflow.checks.spamd import SpamdCheck
from mxflow.checks.uribl import UriblCheck
from mxflow.checks.verdict import decide
from mxflow.config.filter import DNS_CHECKS, ClamdAddress, FilterPolicy, parse_filter_section
from mxflow.mail import Action, CheckResult, MessageContext, Phase, Symbol, Verdict
from mxflow.store.quarantine import RELEASED_HEADER, Quarantine
from mxflow.store.sql import Database

__all__ = ["FilterPipeline", "FilterPolicy", "parse_filter_section"]

log = logging.getLogger(__name__)
_ORDER = (Phase.CONNECT, Phase.ENVELOPE, Phase.DATA)
BIG = 256 * 1024


def _dns_checks(
    policy: FilterPolicy, resolver: dns.asyncresolver.Resolver | None
) -> tuple[list[Check], list[str]]:
    """The checks that ask DNS, and the names of those skipped for want of a resolver."""
    if resolver is None:
        return [], [c for c in DNS_CHECKS if policy.enabled(c)]
    built: list[Check] = []
    if policy.enabled("dnsbl") and policy.dnsbl_zones:
        built.append(DnsblCheck(policy, resolver))
    if policy.enabled("fcrdns"):
        built.append(FcrdnsCheck(policy, resolver))
    if policy.enabled("uribl") and policy.uribl_zones:
        built.append(UriblCheck(policy, resolver))
    return built, []


def _content_checks(
    policy: FilterPolicy, model: BayesModel | None, clamd: str | None
) -> list[Check]:
    """Headers, the classifier, the content rules, attachments and ClamAV, as enabled."""
    built: list[Check] = []
    if policy.enabled("headers"):
        built.append(HeaderCheck(policy))
    if policy.enabled("bayes"):
        if model is not None:
            built.append(BayesCheck(policy, model))
        else:
            built.append(BayesCheck(policy, load_model(policy.bayes_model), policy.bayes_model))
    if policy.enabled("content"):
        built.append(ContentCheck(policy))
    if policy.enabled("attachments"):
        built.append(AttachmentCheck(policy))
    address = clamd or policy.clamd
    if address and policy.enabled("clamav"):
        built.append(ClamavCheck(policy, ClamdAddress(address)))
    return built


def _scanner_checks(policy: FilterPolicy) -> list[Check]:
    """The site's own rspamd and spamd, when their tables are set (and the check listed)."""
    built: list[Check] = []
    if policy.rspamd is not None and policy.enabled("rspamd"):
        built.append(RspamdCheck(policy, policy.rspamd))
    if policy.spamd is not None and policy.enabled("spamd"):
        built.append(SpamdCheck(policy, policy.spamd))
    return built


@dataclass
class _PhaseResults:
    """Each phase's results for one session, with the key of what they looked at."""

    by_phase: dict[Phase, tuple[object, list[CheckResult]]] = field(default_factory=dict)


def _phase_key(ctx: MessageContext, phase: Phase) -> object:
    """What the checks of `phase` look at: their results are reused while it is unchanged."""
    if phase == Phase.CONNECT:
        return ctx.client_ip
    if phase == Phase.ENVELOPE:
        return (ctx.client_ip, ctx.helo, ctx.mail_from, tuple(ctx.rcpt_tos))
    return id(ctx.raw)


class FilterPipeline:
    """A node's filter: checks chosen by the policy, run by phase, decided by verdict.py."""

    def __init__(
        self,
        policy: FilterPolicy | None = None,
        resolver: dns.asyncresolver.Resolver | None = None,
        clamd: str | None = None,
        *,
        checks: Sequence[Check] | None = None,
        model: BayesModel | None = None,
        auth_policy: AuthPolicy | None = None,
        sender_auth: Check | None = None,
        authserv_id: str = "mxflow",
        quarantine: Quarantine | None = None,
        database: Database | None = None,
    ) -> None:
        self.policy = policy = policy or FilterPolicy()
        self.quarantine = quarantine
        self.resolver = resolver
        self.rate = RateLimiter(policy) if policy.enabled("rate") else None
        self.skipped: list[str] = []
        if checks is not None:
            self.checks: list[Check] = list(checks)
            return
        built: list[Check] = []
        if policy.enabled("lists"):
            built += [
                IpListCheck(policy),
                SenderListCheck(policy),
                SenderListCheck(policy, phase=Phase.DATA, name="from_lists"),
            ]
        dns_checks, self.skipped = _dns_checks(policy, resolver)
        built += dns_checks
        if policy.enabled("helo"):
            built.append(HeloCheck(policy))
        if sender_auth is not None:
            built.append(sender_auth)
        elif policy.enabled("sender_auth"):
            if resolver is None:
                self.skipped.append("sender_auth")
            else:
                auth = auth_policy or AuthPolicy(authserv_id=authserv_id)
                built.append(SenderAuthCheck(auth, resolver))
        self.checks = built + _content_checks(policy, model, clamd) + _scanner_checks(policy)
        if database is not None:  # what any node learns, this classifier uses
            self.checks = share_learning(self.checks, database)

    def connection_closed(self, session: MessageContext | str) -> None:
        """Tell the rate limiter a session has ended (pass the context given at CONNECT)."""
        if self.rate is not None:
            self.rate.closed(session)

    async def _run_one(self, check: Check, ctx: MessageContext) -> CheckResult:
        budget = float(getattr(check, "timeout", None) or self.policy.check_timeout)
        try:
            return await asyncio.wait_for(check.check(ctx), budget)
        except TimeoutError:
            result = CheckResult()
            result.add(f"{check.name.upper()}_TIMEOUT", 0.0, f"> {budget}s")
            if getattr(check, "fail_closed", False):  # e.g. malware scanning: try later
                result.action = Action.TEMPFAIL
                result.reason = f"{check.name} did not finish in time, try again later"
            return result
        except Exception as exc:
            log.exception("check %s failed", check.name)
            result = CheckResult()
            result.add(f"{check.name.upper()}_ERROR", 0.0, f"{type(exc).__name__}: {exc}")
            return result

    async def run_phase(self, ctx: MessageContext, phase: Phase) -> list[CheckResult]:
        """The results of one phase's checks (without the rate limiter)."""
        checks = [c for c in self.checks if c.phase == phase]
        if phase == Phase.DATA and len(ctx.raw) > BIG:
            await asyncio.to_thread(mime.view, ctx)  # parse big messages off the event loop
        return list(await asyncio.gather(*(self._run_one(c, ctx) for c in checks)))

    async def _released(self, ctx: MessageContext) -> Verdict | None:
        """A bypass verdict for a message our quarantine is releasing; a symbol if forged."""
        if RELEASED_HEADER.encode() not in ctx.raw[:65536]:
            return None
        qid = None
        if self.quarantine is not None:
            qid = await asyncio.to_thread(self.quarantine.verify_release, ctx.raw)
        if qid is None:
            return None
        return Verdict(
            action=Action.DELIVER,
            scl=-1,
            reason=f"released from quarantine ({qid})",
            symbols=[Symbol("QUARANTINE_RELEASED", 0.0, qid)],
        )

    async def evaluate(self, ctx: MessageContext, phase: Phase) -> Verdict:
        """The verdict for `ctx` at `phase`; at DATA it covers every phase.

        A message re-injected by a quarantine release (its `X-Mxflow-Released` stamp checked
        against the stored copy) is not filtered again: SCL -1, deliver.
        """
        if phase == Phase.DATA:
            released = await self._released(ctx)
            if released is not None:
                return released
        # results of earlier phases, each kept with what it looked at, so a second message
        # in the same session (new MAIL FROM) never inherits the first one's envelope results
        stored = ctx.state(_PhaseResults).by_phase
        results: list[CheckResult] = []
        if phase == Phase.CONNECT and self.rate is not None:
            results.append(await self.rate.check(ctx))
        wanted = _ORDER[: _ORDER.index(phase) + 1]
        for step in wanted:
            key = _phase_key(ctx, step)
            if step == phase or step not in stored or stored[step][0] != key:
                stored[step] = (key, await self.run_phase(ctx, step))
            results.extend(stored[step][1])
        if phase == Phase.DATA and RELEASED_HEADER.encode() in ctx.raw[:65536]:
            forged = CheckResult()
            forged.add("FORGED_RELEASE", self.policy.score("FORGED_RELEASE", 5.0), RELEASED_HEADER)
            results.append(forged)
        if phase == Phase.DATA and self.skipped:
            skipped = CheckResult()
            skipped.add("DNS_CHECKS_SKIPPED", 0.0, "no resolver: " + ", ".join(self.skipped))
            results.append(skipped)
        return decide(results, self.policy, ctx.client_ip)
