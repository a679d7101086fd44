"""The shared labelled corpus and the shared fold rule.

Layout (as vendored at data/corpus, or /work/shared/corpus): one `*MANIFEST.tsv` with the
columns member, class, size, md5, and the members either as files under the corpus folder
or inside `*.tar.bz2` archives there. The fold rule, shared with bench/filter_accuracy.py:
k = 5 and the fold of a message is int(md5, 16) % 5.
"""

from __future__ import annotations

import csv
import hashlib
import tarfile
from dataclasses import dataclass
from pathlib import Path

K = 5
REPO = Path(__file__).resolve().parents[2]
DEFAULT_CORPUS = REPO / "data" / "corpus"
FALLBACK_CORPUS = Path("/work/shared/corpus")


@dataclass(frozen=True)
class Item:
    member: str
    spam: bool
    md5: str
    path: Path  # the extracted file

    @property
    def fold(self) -> int:
        return int(self.md5, 16) % K


def default_corpus() -> Path:
    return DEFAULT_CORPUS if DEFAULT_CORPUS.is_dir() else FALLBACK_CORPUS


def load(corpus: Path, workdir: Path) -> list[Item]:
    """Read the manifest; make every member available as a file (extracting into workdir)."""
    manifests = sorted(corpus.glob("*MANIFEST*.tsv")) or sorted(corpus.glob("MANIFEST*"))
    if not manifests:
        raise FileNotFoundError(f"no MANIFEST(.tsv) in {corpus}")
    rows: list[dict[str, str]] = []
    for manifest in manifests:
        with manifest.open(newline="") as fh:
            rows.extend(csv.DictReader(fh, delimiter="\t"))
    wanted = {row["member"] for row in rows}
    located: dict[str, Path] = {m: corpus / m for m in wanted if (corpus / m).is_file()}
    if len(located) < len(wanted):
        for archive in sorted(corpus.glob("*.tar*")):
            with tarfile.open(archive) as tar:
                for info in tar:
                    if info.isfile() and info.name in wanted and info.name not in located:
                        target = workdir / info.name
                        target.parent.mkdir(parents=True, exist_ok=True)
                        src = tar.extractfile(info)
                        assert src is not None
                        target.write_bytes(src.read())
                        located[info.name] = target
    items: list[Item] = []
    for row in rows:
        path = located.get(row["member"])
        if path is None:
            raise FileNotFoundError(
                f"{row['member']} listed in the manifest but not found in {corpus}"
            )
        items.append(Item(row["member"], row["class"] == "spam", row["md5"].lower(), path))
    # Check a sample against its md5, so a wrong corpus fails loudly.
    for item in items[:: max(1, len(items) // 50)]:
        if hashlib.md5(item.path.read_bytes()).hexdigest() != item.md5:
            raise ValueError(f"{item.member}: md5 differs from the manifest")
    return items


def pick(corpus: Path, spam: bool, low: int, high: int) -> bytes:
    """One message of the class with low <= size <= high (the first by md5), as bytes."""
    manifests = sorted(corpus.glob("*MANIFEST*.tsv"))
    rows: list[dict[str, str]] = []
    for manifest in manifests:
        with manifest.open(newline="") as fh:
            rows.extend(csv.DictReader(fh, delimiter="\t"))
    wanted = sorted(
        (r for r in rows if (r["class"] == "spam") == spam and low <= int(r["size"]) <= high),
        key=lambda r: r["md5"],
    )
    if not wanted:
        raise FileNotFoundError(f"no {'spam' if spam else 'ham'} of {low}-{high} bytes in {corpus}")
    member = wanted[0]["member"]
    if (corpus / member).is_file():
        return (corpus / member).read_bytes()
    for archive in sorted(corpus.glob("*.tar*")):
        with tarfile.open(archive) as tar:
            try:
                src = tar.extractfile(member)
            except KeyError:
                continue
            if src is not None:
                return src.read()
    raise FileNotFoundError(f"{member} not found in {corpus}")
