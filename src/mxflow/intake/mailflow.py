"""Mail flow rules (the reference's transport rules) as a stage, after the verdict.

This is how an administrator honours a third party's verdict ("from the gateway's
connector with X-Spam-Flag: YES -> SCL 6") or overrides the host's own: the rules see
the SCL the filter gave (the original sender's IP when enhanced filtering acted) and may
set it, edit headers, reject, redirect or quarantine (rules.py decides; this applies).
"""

from __future__ import annotations

from collections.abc import Sequence

from mxflow.config import MailFlowRule
from mxflow.intake.base import Disposition, Transaction
from mxflow.intake.rules import RuleInput, apply_header_changes, evaluate_rules
from mxflow.mail import Action, Verdict, header_section
from mxflow.smtp.replies import reply_line


class RulesStage:
    name = "mail-flow-rules"

    def __init__(self, rules: Sequence[MailFlowRule]) -> None:
        self.rules = list(rules)

    async def run(self, tx: Transaction) -> None:
        if not self.rules:
            return
        decision = evaluate_rules(
            self.rules,
            RuleInput(
                header_section(tx.raw),
                tx.sender_ip,
                tx.mail_from,
                tuple(tx.rcpt_tos),
                tx.session.connector,
                tx.scl if tx.scl is not None else 0,
            ),
        )
        if not decision.matched:
            return
        tx.notes.append("mail flow rules: " + ", ".join(decision.matched))
        if decision.reject is not None:
            tx.reply = reply_line(550, "5.7.1", decision.reject)
            return
        tx.raw = apply_header_changes(tx.raw, decision)
        if decision.redirect:
            tx.rcpt_tos = list(decision.redirect)
        if decision.scl is not None:
            tx.set_scl(decision.scl)
        if decision.quarantine:
            reason = f"mail flow rule {decision.matched[-1]}"
            tx.verdict = tx.verdict or Verdict(action=Action.QUARANTINE, scl=tx.scl or 0)
            tx.verdict.reason = tx.verdict.reason or reason
            tx.disposition = Disposition.QUARANTINE
