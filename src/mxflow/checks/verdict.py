"""Scores to SCL to action, and the spam headers the mailbox host files mail by.

The sum of the symbols' scores is mapped onto the reference host's Spam Confidence Level:
-1 bypass (allow-listed), 0-1 clean, 5-6 spam, 7-9 high-confidence spam — never 2-4,
because the host never outputs those and admins read SCL the host's way. The action
follows from the SCL band and the policy, unless a check asked for a stronger one
(DMARC reject, malware, a blocked sender). Malware is never delivered, not even to an
allow-listed sender, nor left unscanned for one: a check's TEMPFAIL (scanner down) holds.
"""

from __future__ import annotations

from collections.abc import Sequence

from mxflow.config.filter import FilterPolicy
from mxflow.mail import ACTION_STRENGTH, Action, CheckResult, Symbol, Verdict, is_malware, strongest

ALLOWED = "ALLOWLISTED"
BLOCKED = "BLOCKLISTED"


def scl_for(score: float, policy: FilterPolicy) -> int:
    """The SCL of a message score under `policy` (0, 1, 5, 6, 7, 8 or 9)."""
    junk, high, reject = policy.junk_score, policy.quarantine_score, policy.reject_score
    if score < junk:
        return 0 if score < junk / 2 else 1
    if score < high:
        return 5 if score < (junk + high) / 2 else 6
    if score < reject:
        return 7 if score < (high + reject) / 2 else 8
    return 9


def action_for_scl(scl: int, policy: FilterPolicy) -> Action:
    if scl >= 9:
        return policy.reject_action
    if scl >= 7:
        return policy.high_spam_action
    if scl >= 5:
        return policy.spam_action
    return Action.DELIVER


def decide(results: Sequence[CheckResult], policy: FilterPolicy, client_ip: str) -> Verdict:
    """Combine the checks' results into one verdict under `policy`."""
    symbols = [s for r in results for s in r.symbols]
    score = round(sum(s.score for s in symbols), 3)
    names = {s.name for s in symbols}
    malware = [s for s in symbols if is_malware(s)]
    requested = [r for r in results if r.action is not None]
    scl = scl_for(score, policy)
    if ALLOWED in names and BLOCKED not in names:
        scl, action, reason = -1, Action.DELIVER, "sender allow-listed"
        # allow-listing bypasses spam scoring, not what could not be done: a malware scan
        # that did not finish (clamd down) or a rate limit still says "try again later"
        unfinished = [r for r in requested if r.action == Action.TEMPFAIL]
        if unfinished:
            action, reason = Action.TEMPFAIL, unfinished[0].reason or "try again later"
    else:
        action = action_for_scl(scl, policy)
        reason = _score_reason(action, score, symbols)
        asked = strongest([r.action for r in requested])
        if asked is not None and ACTION_STRENGTH[asked] >= ACTION_STRENGTH[action]:
            action = asked  # a check's explicit ask (and its reason) beats the score's
            reason = next(r.reason for r in requested if r.action == asked) or reason
    if malware:
        # the malware action replaces the score's; only a check's explicit ask is stronger
        asked = strongest([r.action for r in requested])
        action = policy.malware_action
        if asked is not None and ACTION_STRENGTH[asked] > ACTION_STRENGTH[action]:
            action = asked
        reason = "malware: " + ", ".join(s.detail or s.name for s in malware)
        scl = 9
    verdict = Verdict(
        action=action,
        score=score,
        scl=scl,
        reason=reason,
        symbols=sorted(symbols, key=lambda s: (-abs(s.score), s.name)),
        auth_results=[a for r in results for a in r.auth_results],
    )
    verdict.headers = [h for r in results for h in r.headers]
    if action in (Action.DELIVER, Action.JUNK):
        verdict.headers.extend(spam_headers(verdict, policy, client_ip, names))
    return verdict


def _score_reason(action: Action, score: float, symbols: Sequence[Symbol]) -> str:
    if action == Action.DELIVER:
        return ""
    top = [s.name for s in sorted(symbols, key=lambda s: -s.score) if s.score > 0][:4]
    return f"spam score {score:.1f} ({', '.join(top)})"


def spam_headers(
    verdict: Verdict, policy: FilterPolicy, client_ip: str, names: set[str] | None = None
) -> list[tuple[str, str]]:
    """X-Spam-Status, X-Spam-Score and an X-Forefront-Antispam-Report-style summary: the
    host's CIP, SFV (NSPM, SPM, SKA allow-listed, SKB block-listed), SCL, CAT (NONE, SPM,
    HSPM high-confidence, MALW) and DIR, plus mxflow's SCORE."""
    names = names if names is not None else {s.name for s in verdict.symbols}
    spam = verdict.scl >= 5
    tests = ",".join(sorted(s.name for s in verdict.symbols if s.score != 0)) or "none"
    status = (
        f"{'Yes' if spam else 'No'}, score={verdict.score:.1f} "
        f"required={policy.junk_score:.1f} tests={tests}"
    )
    if verdict.scl == -1:
        sfv = "SKA"
    elif BLOCKED in names:
        sfv = "SKB"
    elif spam:
        sfv = "SPM"
    else:
        sfv = "NSPM"
    if any(is_malware(s) for s in verdict.symbols):
        cat = "MALW"
    elif verdict.scl >= 7:
        cat = "HSPM"
    else:
        cat = "SPM" if spam else "NONE"
    report = (
        f"CIP:{client_ip};SFV:{sfv};SCL:{verdict.scl};SCORE:{verdict.score:.1f};CAT:{cat};DIR:INB;"
    )
    return [
        ("X-Spam-Status", status),
        ("X-Spam-Score", f"{verdict.score:.1f}"),
        ("X-Spam-Flag", "YES" if spam else "NO"),
        ("X-Forefront-Antispam-Report", report),
    ]
