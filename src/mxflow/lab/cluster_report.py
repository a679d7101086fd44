"""The report of `mxflow lab run --nodes 2`: nothing lost, the senders' fallback, the
killed node's spool delivered after its restart, one trace across the nodes.

Every figure is read back, not assumed: the senders' records (lab/peers.py: which MX took
each message, what failed first), the mailboxes and quarantines (where each message is),
the killed node's spool as the kill left it, the nodes' logs and the message trace.

A duplicate is possible and SMTP allows it (RFC 5321 §6.1, RFC 1047): when a connection
breaks after the message was sent but before its 250 was read, the sender must assume it
was not taken and sends it again (to the next MX); and a node killed after the next hop
took a message but before it recorded that delivers it again after its restart. The
report counts duplicates and fails only on one that neither explains.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from mxflow.lab.cluster import RESTART_AT, ClusterRun
from mxflow.lab.corpus import LabMessage
from mxflow.store.trace import TraceEvent
from mxflow.store.trace_query import Hop, bare_message_id, hops_of

_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)
PLACES = ("inbox", "junk", "quarantine")
# A node writes its trace rows in batches (store/trace.py): kill -9 loses the rows of
# what it did in about the last moment. Messages it took this long before its kill may
# miss their gateway hop in the trace, with their mail safe.
TRACE_LOSS_WINDOW = 1.0


def _message_id(m: LabMessage) -> str:
    found = _MESSAGE_ID.search(m.raw.partition(b"\r\n\r\n")[0])
    return bare_message_id(found.group(1).decode(errors="replace")) if found else ""


def outcomes(run: ClusterRun) -> dict[str, str]:
    """lab id -> delivered | duplicate | lost | rejected | never acknowledged."""
    result = {}
    for m, sent in zip(run.messages, run.sent, strict=True):
        places = run.found.get(m.lab_id, [])
        if len(places) > 1:
            result[m.lab_id] = "duplicate"
        elif places:
            result[m.lab_id] = "delivered"
        elif sent.accepted:
            result[m.lab_id] = "lost"
        else:
            result[m.lab_id] = "rejected" if sent.reply.startswith("5") else "never acknowledged"
    return result


def _messages(run: ClusterRun, where: dict[str, str]) -> dict[str, int]:
    counts = Counter(where.values())
    places = Counter(p for m in run.messages for p in run.found.get(m.lab_id, [])[:1])
    return {
        "sent": len(run.messages),
        "acknowledged": sum(s.accepted for s in run.sent),
        "rejected": counts["rejected"],
        "never_acknowledged": counts["never acknowledged"],
        "delivered": counts["delivered"] + counts["duplicate"],
        **{p: places[p] for p in PLACES},
        "lost": counts["lost"],
        "duplicate": counts["duplicate"],
    }


def _reason(text: str) -> str:
    if text.startswith("cannot connect"):
        return "connection refused"
    if text.startswith(("connection lost", "000")):
        return "connection lost"
    return text[:3]


def _fallback(run: ClusterRun, victim_mx: str) -> dict[str, Any]:
    fell = [s for s in run.sent if s.fell_back]
    return {
        "messages": len(fell),
        "from": dict(Counter(s.attempts[0].mx for s in fell)),
        "to": dict(Counter(s.mx for s in fell)),
        "why": dict(Counter(_reason(s.attempts[0].result) for s in fell)),
        "after_data": sum(s.maybe_twice for s in run.sent),
        "from_the_killed_node": sum(s.attempts[0].mx == victim_mx for s in fell),
    }


def _nodes(run: ClusterRun, events: list[TraceEvent]) -> list[dict[str, Any]]:
    restarted_from = int(len(run.messages) * RESTART_AT)
    after = [s for i, s in enumerate(run.sent) if i >= restarted_from]
    rows = []
    for (preference, mx, address), name in zip(run.mx, run.nodes, strict=True):
        rows.append(
            {
                "name": name,
                "mx": mx,
                "preference": preference,
                "address": address,
                "took": sum(s.accepted and s.mx == mx for s in run.sent),
                "refused": sum(s.reply.startswith("5") and s.mx == mx for s in run.sent),
                "took_after_restart": sum(s.accepted and s.mx == mx for s in after),
                "received_in_trace": sum(e.node == name and e.event == "received" for e in events),
                "recovered_at_start": run.recovered.get(name, []),
            }
        )
    return rows


def _kill(run: ClusterRun, where: dict[str, str], events: list[TraceEvent]) -> dict[str, Any]:
    chaos = run.chaos
    queue_ids = set(chaos.spooled.values())
    after_restart = {
        e.queue_id
        for e in events
        if e.node == chaos.node and e.event == "delivered" and e.queue_id in queue_ids
        and e.ts >= chaos.restarted_at
    }  # fmt: skip
    return {
        "node": chaos.node,
        "answered_before": chaos.answered_before,
        "at_seconds": round(chaos.killed_at - run.started_at, 1),
        "restart_at_seconds": round(chaos.restarted_at - run.started_at, 1),
        "spooled": len(chaos.spooled),
        "spooled_in_a_mailbox": sum(
            where[lab] in ("delivered", "duplicate") for lab in chaos.spooled
        ),
        "spooled_delivered_after_restart": len(after_restart),
    }


def _duplicates(run: ClusterRun, where: dict[str, str]) -> dict[str, Any]:
    twice = {m.lab_id for m, s in zip(run.messages, run.sent, strict=True) if s.maybe_twice}
    dups = [lab for lab, w in where.items() if w == "duplicate"]
    return {
        "count": len(dups),
        "sender_session_broke_after_data": sum(lab in twice for lab in dups),
        "in_the_killed_spool": sum(lab in run.chaos.spooled and lab not in twice for lab in dups),
        "unexplained": [lab for lab in dups if lab not in twice and lab not in run.chaos.spooled],
    }


def _trace(run: ClusterRun, where: dict[str, str]) -> dict[str, Any]:
    """One trace across the nodes: every message in a mailbox has one, from its gateway
    node (whichever took it) to the host's delivery; some span both gateway nodes."""
    by_id: dict[str, list[TraceEvent]] = {}
    for events in run.traces:
        for e in events:
            if e.message_id:
                by_id[bare_message_id(e.message_id)] = events
    gateways, victim_mx = set(run.nodes), run.mx[0][1]
    end_to_end, across, untraced, no_gateway, unexplained, no_received = 0, 0, 0, 0, [], 0
    for m, sent in zip(run.messages, run.sent, strict=True):
        if where[m.lab_id] not in ("delivered", "duplicate"):
            continue
        found = by_id.get(_message_id(m))
        if found is None:
            untraced += 1
            continue
        no_received += sent.mx == victim_mx and not any(
            e.node == run.chaos.node and e.event == "received" for e in found
        )
        nodes = {e.node for e in found}
        across += len(nodes & gateways) > 1
        if not nodes & gateways:
            no_gateway += 1
            near_kill = 0 <= run.chaos.killed_at - sent.at <= TRACE_LOSS_WINDOW
            if not (sent.mx == victim_mx and near_kill):
                unexplained.append(m.lab_id)
        elif any(e.node not in gateways and e.event == "delivered" for e in found):
            end_to_end += 1
    return {
        "stores": run.trace_stores,
        "messages": len(run.traces),
        "events": dict(Counter(e.node for t in run.traces for e in t)),
        "received_rows_lost_with_the_kill": no_received,
        "end_to_end": end_to_end,
        "across_gateways": across,
        "untraced": untraced,
        "without_gateway_hop": no_gateway,
        "without_gateway_hop_unexplained": unexplained,
        "examples": _examples(run, by_id),
    }


def _examples(run: ClusterRun, by_id: dict[str, list[TraceEvent]]) -> list[dict[str, Any]]:
    """One message the killed node held (delivered after its restart), and one whose
    trace spans both gateway nodes, if there is one: each hop, relative to the kill."""
    by_lab = {m.lab_id: m for m in run.messages}
    held = [lab for lab in run.chaos.spooled if _message_id(by_lab[lab]) in by_id]
    once = [lab for lab in held if len(run.found.get(lab, [])) == 1]  # not handed on yet
    picks = (once or held)[:1]
    for m in run.messages:
        events = by_id.get(_message_id(m), [])
        if len({e.node for e in events} & set(run.nodes)) > 1:
            picks.append(m.lab_id)
            break
    sent = {m.lab_id: s for m, s in zip(run.messages, run.sent, strict=True)}
    examples = []
    for lab in dict.fromkeys(picks):
        message_id = _message_id(by_lab[lab])
        hops = [_hop(hop, run.chaos.killed_at) for hop in hops_of(by_id[message_id])]
        tries = [f"{a.mx}: {a.result[:48]}" for a in sent[lab].attempts]
        examples.append(
            {"lab_id": lab, "message_id": message_id, "hops": hops, "sender": tries,
             "answered_at": round(sent[lab].at - run.chaos.killed_at, 2),
             "found": run.found.get(lab, [])}
        )  # fmt: skip
    return examples


def _hop(hop: Hop, kill: float) -> dict[str, Any]:
    events = [
        {"at": round(e.ts - kill, 2), "event": e.event, "reply": (e.reply or e.detail)[:70]}
        for e in hop.events
    ]
    return {"node": hop.node, "queue_id": hop.queue_id, "events": events}


def cluster_json(run: ClusterRun) -> dict[str, Any]:
    where = outcomes(run)
    events = [e for t in run.traces for e in t]
    return {
        "database": re.sub(r"//[^@/]*@", "//", run.database),  # no user or password
        "mx": [f"{p} {host} ({address})" for p, host, address in run.mx],
        "messages": _messages(run, where),
        "nodes": _nodes(run, events),
        "kill": _kill(run, where, events),
        "fallback": _fallback(run, run.mx[0][1]),
        "duplicates": _duplicates(run, where),
        "drain": [vars(d) for d in run.drains],
        "trace": _trace(run, where),
        "seconds": run.seconds,
    }


def story(data: dict[str, Any]) -> list[tuple[bool, str]]:
    """The claims of the issue, each with whether this run's numbers bear it out."""
    msgs, kill, fb, dup, trace = (
        data[k] for k in ("messages", "kill", "fallback", "duplicates", "trace")
    )
    victim, other = data["nodes"][0], data["nodes"][1:]
    return [
        (msgs["lost"] == msgs["never_acknowledged"] == 0,
         f"nothing lost: {msgs['acknowledged']} acknowledged, {msgs['delivered']} in a "
         "mailbox or quarantine"),
        (not dup["unexplained"],
         f"duplicates only where SMTP allows them: {dup['count']}"),
        (fb["from_the_killed_node"] > 0 and all(n["took"] > 0 for n in other),
         f"the senders fell back to the next MX: {fb['from_the_killed_node']} message(s)"),
        (kill["spooled"] > 0 and kill["spooled_in_a_mailbox"] == kill["spooled"],
         f"{kill['node']}'s spool at the kill ({kill['spooled']} acknowledged) delivered "
         "after its restart"),
        (victim["took_after_restart"] > 0,
         f"after its restart {victim['name']} took mail again: {victim['took_after_restart']}"),
        (all(trace["events"].get(n["name"], 0) > 0 for n in data["nodes"])
         and trace["untraced"] == 0 and not trace["without_gateway_hop_unexplained"],
         f"one trace across the nodes: {trace['end_to_end']} of {msgs['delivered']} traced "
         "from a gateway node to the mailbox"),
        (all(d["status"] == 0 and d["node_status"] == 0 for d in data["drain"]),
         "every node left with `mxflow queue drain`: exit 0, nothing left in its spool"),
    ]  # fmt: skip


def _examples_text(trace: dict[str, Any]) -> list[str]:
    """Each example as a timeline: the sender's answer, then every trace row in time."""
    lines = []
    titles = ("a message the killed node held, across its kill", "a trace across both nodes")
    for title, example in zip(titles, trace["examples"], strict=False):
        twice = len(example["found"]) > 1
        note = " (in the mailbox twice: it had reached the host before the kill)" if twice else ""
        lines.append(f"  {title}: <{example['message_id']}>{note}")
        rows = [(example["answered_at"], "sender", " -> ".join(example["sender"]))]
        for hop in example["hops"]:
            for e in hop["events"]:
                text = f"{hop['queue_id']:<20}  {e['event']:<10} {e['reply']}"
                rows.append((e["at"], hop["node"], text))
        for at, who, text in sorted(rows, key=lambda r: r[0]):
            lines.append(f"    {at:+8.2f} s  {who:<10} {text}".rstrip())
    if trace["examples"]:
        lines.append("    (seconds from the kill)")
    return lines


def _node_rows(data: dict[str, Any]) -> list[str]:
    head = ["node", "MX", "took", "refused", "after restart", "trace: received", "recovered"]
    rows = [head]
    for n in data["nodes"]:
        recovered = ", ".join(str(x) for x in n["recovered_at_start"]) or "-"
        rows.append(
            [n["name"], f"{n['preference']} {n['mx']}", str(n["took"]), str(n["refused"]),
             str(n["took_after_restart"]), str(n["received_in_trace"]), recovered]
        )  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return [
        "  " + "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in
                         enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]  # fmt: skip


def cluster_text(data: dict[str, Any]) -> str:
    """The run as a readable report."""
    m, kill, fb, dup, trace = (
        data[k] for k in ("messages", "kill", "fallback", "duplicates", "trace")
    )
    why = ", ".join(f"{k} {v}" for k, v in fb["why"].items()) or "-"
    drains = ", ".join(
        f"{d['node']} exit {d['node_status']} ({d['held']} queued when asked, "
        f"`queue drain` exit {d['status']}, {d['seconds']} s)"
        for d in data["drain"]
    )
    lines = [
        f"--nodes {len(data['nodes'])}: scenario 1 with {len(data['nodes'])} gateway nodes, "
        f"one PostgreSQL ({data['database'] or 'none: a shared SQLite trace'})"
        f"  ({data['seconds']} s)",
        "  contoso.com " + ", ".join(f"MX {x}" for x in data["mx"]),
        f"  sent {m['sent']}: acknowledged {m['acknowledged']}, refused {m['rejected']} (5xx),"
        f" never acknowledged {m['never_acknowledged']}",
        f"  in a mailbox or quarantine {m['delivered']} (inbox {m['inbox']}, junk {m['junk']},"
        f" quarantine {m['quarantine']}), lost {m['lost']}, duplicates {m['duplicate']}",
        *_node_rows(data),
        f"  kill -9 {kill['node']} at {kill['at_seconds']} s ({kill['answered_before']} of "
        f"{m['sent']} answered): {kill['spooled']} acknowledged message(s) in its spool",
        f"  restarted at {kill['restart_at_seconds']} s: {kill['spooled_in_a_mailbox']} of them"
        f" reached a mailbox, {kill['spooled_delivered_after_restart']} delivered by it after"
        " the restart (trace)",
        f"  fallback: {fb['messages']} message(s) taken by another MX than the first tried"
        f" ({why}); {fb['after_data']} after their data was sent",
        f"  duplicates {dup['count']}: {dup['sender_session_broke_after_data']} whose session"
        " broke after the data (the 250 was lost, the next MX took it too), "
        f"{dup['in_the_killed_spool']} in {kill['node']}'s spool at the kill (handed on, not"
        " yet recorded: sent again after the restart); unexplained "
        f"{len(dup['unexplained'])}",
        f"  drain: {drains}",
        f"  trace ({len(trace['stores'])} store(s) read): {trace['messages']} messages, rows"
        " per node " + ", ".join(f"{k} {v}" for k, v in trace["events"].items()),
        f"    {trace['end_to_end']} traced from a gateway node to the mailbox,"
        f" {trace['across_gateways']} across both gateway nodes; kill -9 lost rows the killed"
        f" node had not yet written: {trace['received_rows_lost_with_the_kill']} message(s)"
        f" without its 'received', {trace['without_gateway_hop']} without any gateway row",
        *_examples_text(trace),
    ]
    return "\n".join(lines)
