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
import importlib
import logging
from collections.abc import Sequence
from typing import Any

import dns.asyncresolver

from mxflow.checks import mime
from mxflow.checks.base import Check, CheckResult, MessageContext, Phase, Verdict
from mxflow.checks.bayes import BayesCheck, load_model
from mxflow.checks.clamav import ClamavCheck, ClamdAddress
from mxflow.checks.classifier import BayesModel
from mxflow.checks.connection import DnsblCheck, FcrdnsCheck, HeloCheck, RateLimiter
from mxflow.checks.headers import HeaderCheck
from mxflow.checks.lists import IpListCheck, SenderListCheck
from mxflow.checks.policy import DNS_CHECKS, FilterPolicy, parse_filter_section
from mxflow.checks.uribl import UriblCheck
from mxflow.checks.verdict import decide

__all__ = ["FilterPipeline", "FilterPolicy", "parse_filter_section"]

log = logging.getLogger(__name__)
_RESULTS_ATTR = "_mxflow_phase_results"
_ORDER = (Phase.CONNECT, Phase.ENVELOPE, Phase.DATA)
BIG = 256 * 1024


def _sender_auth_check(
    resolver: dns.asyncresolver.Resolver, auth_policy: Any, authserv_id: str
) -> Any:
    """The auth developer's SPF/DKIM/DMARC/ARC check, when that module exists."""
    try:
        module = importlib.import_module("mxflow.checks.sender_auth")
        policy_module = importlib.import_module("mxflow.auth.policy")
    except ImportError:
        return None
    if auth_policy is None:
        auth_policy = policy_module.AuthPolicy(authserv_id=authserv_id)
    return module.SenderAuthCheck(auth_policy, resolver)


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
        auth_policy: Any = None,
        sender_auth: Check | None = None,
        authserv_id: str = "mxflow",
    ) -> None:
        self.policy = policy = policy or FilterPolicy()
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
        if resolver is not None:
            if policy.enabled("dnsbl") and policy.dnsbl_zones:
                built.append(DnsblCheck(policy, resolver))
            if policy.enabled("fcrdns"):
                built.append(FcrdnsCheck(policy, resolver))
            if policy.enabled("uribl") and policy.uribl_zones:
                built.append(UriblCheck(policy, resolver))
        else:
            self.skipped = [c for c in DNS_CHECKS if policy.enabled(c)]
        if policy.enabled("helo"):
            built.append(HeloCheck(policy))
        if sender_auth is not None:
            built.append(sender_auth)
        elif policy.enabled("sender_auth"):
            if resolver is None:
                self.skipped.append("sender_auth")
            else:
                auth = _sender_auth_check(resolver, auth_policy, authserv_id)
                if auth is not None:
                    built.append(auth)
        if policy.enabled("headers"):
            built.append(HeaderCheck(policy))
        if policy.enabled("bayes"):
            built.append(BayesCheck(policy, model or load_model(policy.bayes_model)))
        if policy.enabled("attachments"):
            from mxflow.checks.attachments import AttachmentCheck

            built.append(AttachmentCheck(policy))
        address = clamd or policy.clamd
        if address and policy.enabled("clamav"):
            built.append(ClamavCheck(policy, ClamdAddress(address)))
        self.checks = built

    def connection_closed(self, client_ip: str) -> None:
        """Tell the rate limiter a session from `client_ip` has ended."""
        if self.rate is not None:
            self.rate.closed(client_ip)

    async def _run_one(self, check: Check, ctx: MessageContext) -> CheckResult:
        try:
            return await asyncio.wait_for(check.check(ctx), self.policy.check_timeout)
        except TimeoutError:
            result = CheckResult()
            result.add(f"{check.name.upper()}_TIMEOUT", 0.0, f"> {self.policy.check_timeout}s")
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

    async def evaluate(self, ctx: MessageContext, phase: Phase) -> Verdict:
        """The verdict for `ctx` at `phase`; at DATA it covers every phase."""
        stored: dict[Phase, list[CheckResult]] = ctx.__dict__.setdefault(_RESULTS_ATTR, {})
        results: list[CheckResult] = []
        if phase == Phase.CONNECT and self.rate is not None:
            results.append(await self.rate.check(ctx))
        wanted = _ORDER[: _ORDER.index(phase) + 1]
        for step in wanted:
            if step not in stored or step == phase:
                stored[step] = await self.run_phase(ctx, step)
            results.extend(stored[step])
        if phase == Phase.DATA and self.skipped:
            skipped = CheckResult()
            skipped.add("DNS_CHECKS_SKIPPED", 0.0, "no resolver: " + ", ".join(self.skipped))
            results.append(skipped)
        return decide(results, self.policy, ctx.client_ip)
