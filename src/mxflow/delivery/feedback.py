"""What users do with their mail teaches the host's filter: Junk-folder moves as feedback.

Every message the host files carries its final SCL (`X-MS-Exchange-Organization-SCL`,
which only the host writes: it strips incoming copies). So a message in a user's Inbox
with an SCL of 5 or more was filed as junk and moved out by the user: ham. One in the
Junk folder with a lower SCL, or none, was moved in by the user: spam. Nothing else
counts — a move to Trash says "unwanted", not "spam", so Trash is never read. Learning is
idempotent (the trainer's ledger), and a pass remembers which files it has judged, so a
periodic pass reads only what is new.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from mxflow.checks.bayes import Trainer
from mxflow.config import NodeConfig
from mxflow.delivery.mailbox import INBOX, JUNK, folder_dir
from mxflow.mail import header_section

SCL_HEADER = re.compile(
    rb"^X-MS-Exchange-Organization-SCL:[ \t]*(-?\d{1,2})[ \t]*\r?$", re.I | re.M
)
MAX_READ = 4 * 1024 * 1024  # a message larger than this is not learnt from


@dataclass
class Feedback:
    """What one pass found: messages moved out of Junk (ham) and into it (spam)."""

    ham: int = 0
    spam: int = 0
    seen: int = 0


def filed_scl(raw: bytes) -> int | None:
    """The SCL the host filed the message with, or None when it stamped none."""
    m = SCL_HEADER.search(header_section(raw))
    return int(m.group(1)) if m else None


def _files(folder: Path) -> list[Path]:
    """The messages of a Maildir folder (`new/` and `cur/`)."""
    found: list[Path] = []
    for sub in ("new", "cur"):
        if (folder / sub).is_dir():
            found += [p for p in (folder / sub).iterdir() if p.is_file()]
    return found


def _judge(path: Path, in_junk: bool) -> bool | None:
    """True: learn as spam; False: as ham; None: the user did not move it."""
    if path.stat().st_size > MAX_READ:
        return None
    scl = filed_scl(path.read_bytes())
    if in_junk and (scl is None or scl < 5):
        return True
    if not in_junk and scl is not None and scl >= 5:
        return False
    return None


def _judged(state_file: Path) -> set[str]:
    """The files judged by earlier passes; an unreadable list (truncated, hand-edited,
    not JSON) counts as none, so the next pass judges again: learning is idempotent."""
    try:
        data = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeError, ValueError):
        return set()
    return {x for x in data if isinstance(x, str)} if isinstance(data, list) else set()


def learn_from_folders(maildirs: Path, trainer: Trainer, state_file: Path) -> Feedback:
    """One pass over every mailbox under `maildirs`: train on what users moved."""
    seen = _judged(state_file)
    ham: list[bytes] = []
    spam: list[bytes] = []
    result = Feedback()
    boxes = [p for p in maildirs.iterdir() if p.is_dir()] if maildirs.is_dir() else []
    for box in boxes:
        for folder, in_junk in ((INBOX, False), (JUNK, True)):
            for path in _files(folder_dir(box, folder)):
                key = f"{box.name}/{folder}/{path.name.split(':', 1)[0]}"
                if key in seen:
                    continue
                seen.add(key)
                result.seen += 1
                verdict = _judge(path, in_junk)
                if verdict is not None:
                    (spam if verdict else ham).append(path.read_bytes())
    if ham:
        done = trainer.train_many(ham, False)[1]
        result.ham = done["learnt"] + done["relearnt"]
    if spam:
        done = trainer.train_many(spam, True)[1]
        result.spam = done["learnt"] + done["relearnt"]
    tmp = state_file.with_name(state_file.name + ".tmp")
    tmp.write_text(json.dumps(sorted(seen)))
    os.replace(tmp, state_file)
    return result


def learn_for_node(config: NodeConfig) -> Feedback:
    """One pass for a host node: its Maildir routes' mailboxes, its filter's trainer."""
    from mxflow.checks.node import node_trainer

    trainer = node_trainer(config)
    total = Feedback()
    roots = sorted({r.maildir for r in config.routes if r.maildir is not None})
    for root in roots:
        found = learn_from_folders(root, trainer, config.data_dir / "folder-feedback.json")
        total.ham, total.spam, total.seen = (
            total.ham + found.ham,
            total.spam + found.spam,
            total.seen + found.seen,
        )
    return total
