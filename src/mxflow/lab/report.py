"""The lab's report: per scenario, where each class of mail ended up, and the story.

The numbers come from the outcomes scenario.py read back; nothing here is assumed. The
JSON (`--json FILE`) has the shape the lab issue fixes: per scenario `inbound` (per
sender class: inbox, junk, quarantine, rejected, plus lost/duplicate/tempfail which must
stay 0), `outbound` (SPF, DKIM and DMARC passes at the recipients, and the total) and
`bypass_blocked`; then `reference_spf` (the literal record's result beside the corrected).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from mxflow.lab.scenario import ScenarioRun

PLACES = ("inbox", "junk", "quarantine", "rejected")
PROBLEMS = ("lost", "duplicate", "tempfail")
CLASSES = ("legitimate", "list", "spam", "spoof", "malware", "bypass")
UNWANTED = ("spam", "spoof", "malware", "bypass")


def inbound_counts(run: ScenarioRun) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for kind in CLASSES:
        places = Counter(o.where for o in run.outcomes if o.message.kind == kind)
        counts[kind] = {p: places.get(p, 0) for p in (*PLACES, *PROBLEMS)}
        counts[kind]["sent"] = sum(places.values())
    return counts


def share(counts: dict[str, int], places: tuple[str, ...]) -> float:
    total = counts["sent"]
    return 100.0 * sum(counts[p] for p in places) / total if total else 0.0


def auth_seen(run: ScenarioRun) -> dict[str, dict[str, int]]:
    """SPF and DMARC passes as the filtering node saw them, among delivered messages."""
    seen: dict[str, dict[str, int]] = {}
    for kind in CLASSES:
        delivered = [o for o in run.outcomes if o.message.kind == kind and o.spf]
        seen[kind] = {
            "judged": len(delivered),
            "spf_pass": sum(o.spf == "pass" for o in delivered),
            "dmarc_pass": sum(o.dmarc == "pass" for o in delivered),
        }
    return seen


def outbound_counts(run: ScenarioRun) -> dict[str, int]:
    arrivals = [a for a in run.arrivals if a.lab_id.startswith("outbound/")]
    sent = sum(1 for o in run.outcomes if o.message.kind == "outbound")
    return {
        "spf_pass": sum(a.spf == "pass" for a in arrivals),
        "dkim_pass": sum(a.dkim for a in arrivals),
        "dmarc_pass": sum(a.dmarc == "pass" for a in arrivals),
        "total": len(arrivals),
        "sent": sent,
        "literal_spf_permerror": sum(a.literal_spf == "permerror" for a in arrivals),
    }


def scenario_json(run: ScenarioRun) -> dict[str, Any]:
    inbound = inbound_counts(run)
    bypass = inbound["bypass"]
    return {
        "inbound": inbound,
        "outbound": outbound_counts(run),
        "bypass_blocked": bypass["sent"] > 0 and bypass["rejected"] == bypass["sent"],
        "legitimate_in_inbox_pct": round(share(inbound["legitimate"], ("inbox",)), 1),
        "spam_caught_pct": round(share(inbound["spam"], ("junk", "quarantine", "rejected")), 1),
        "false_positives": inbound["legitimate"]["sent"] - inbound["legitimate"]["inbox"],
        "false_negatives": sum(inbound[k]["inbox"] for k in UNWANTED),
        "auth_seen": auth_seen(run),
        "seconds": round(run.seconds, 1),
        **({"archive": run.archive} if run.archive else {}),
    }


def story(scenarios: dict[str, dict[str, Any]]) -> list[tuple[bool, str]]:
    """The claims the lab exists to measure, each with whether the numbers bear it out."""
    checks: list[tuple[bool, str]] = []
    one, two, ef = (scenarios.get(k) for k in ("1", "2", "2-ef"))

    def score(s: dict[str, Any]) -> float:
        return float(s["legitimate_in_inbox_pct"] + s["spam_caught_pct"])

    if one:
        inbound, out = one["inbound"], one["outbound"]
        checks += [
            (one["legitimate_in_inbox_pct"] >= 95, "scenario 1: >= 95 % of legitimate in Inbox"),
            (one["spam_caught_pct"] >= 90, "scenario 1: >= 90 % of spam caught"),
            (inbound["spoof"]["inbox"] + inbound["malware"]["inbox"] == 0,
             "scenario 1: no spoof or malware in Inbox"),
            (out["total"] > 0 and out["spf_pass"] == out["dkim_pass"] == out["dmarc_pass"]
             == out["total"] == out["sent"], "scenario 1: all outbound passes SPF, DKIM, DMARC"),
        ]  # fmt: skip
    if one and two:
        drop = score(one) - score(two)
        checks.append((drop >= 10, f"scenario 2 is {drop:.1f} points worse than 1 (>= 10)"))
    if one and ef:
        gap = abs(score(one) - score(ef))
        checks.append((gap <= 3, f"scenario 2-ef is within {gap:.1f} points of 1 (<= 3)"))
    for name, s in scenarios.items():
        bad = sum(c[p] for c in s["inbound"].values() for p in PROBLEMS)
        checks.append((bad == 0, f"scenario {name}: no message lost, counted twice or deferred"))
    return checks


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(
        c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


def scenario_table(name: str, data: dict[str, Any]) -> str:
    """One scenario as a readable table."""
    head = ["class", "sent", *PLACES, "spf ok", "dmarc ok"]
    rows = [head]
    for kind, c in data["inbound"].items():
        seen = data["auth_seen"][kind]
        extra = [f"{seen['spf_pass']}/{seen['judged']}", f"{seen['dmarc_pass']}/{seen['judged']}"]
        rows.append([kind, str(c["sent"]), *(str(c[p]) for p in PLACES), *extra])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    out = data["outbound"]
    lines = [f"scenario {name}  ({data['seconds']} s)", *(_row(r, widths) for r in rows)]
    lines += [
        f"  legitimate in Inbox {data['legitimate_in_inbox_pct']} %, spam caught "
        f"{data['spam_caught_pct']} %, false positives {data['false_positives']}, "
        f"unwanted in Inbox {data['false_negatives']}",
        f"  outbound at the recipients: SPF {out['spf_pass']}/{out['total']}, DKIM "
        f"{out['dkim_pass']}/{out['total']}, DMARC {out['dmarc_pass']}/{out['total']}"
        f" (sent {out['sent']})",
        "  direct-to-host bypass: " + ("blocked" if data["bypass_blocked"] else "NOT BLOCKED"),
    ]
    if "archive" in data:
        journal = data["archive"]
        lines.append(
            f"  archiver's journal: {journal['entries']} entries, chain "
            + ("intact" if journal["intact"] else "BROKEN")
        )
    lines += [
        "  (spf/dmarc ok: as the filtering node saw them, of the delivered; the truth: "
        "legitimate and list pass, spoof fails)",
    ]
    return "\n".join(lines)
