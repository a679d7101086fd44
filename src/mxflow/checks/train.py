"""Train the shipped classifier model from the vendored corpus: `make model`.

    python -m mxflow.checks.train data/corpus src/mxflow/data/bayes.model.gz

The corpus is a MANIFEST (`member class size md5`, tab-separated) and one `.tar.bz2` per
class. Messages are read in manifest order, each checked against its md5, and the model
file is deterministic (sorted tokens, gzip without a timestamp), so the same corpus always
gives the same bytes. The cross-validation folds shared with the peer benchmarks come from
here too: fold = int(md5, 16) % 5.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mxflow.checks.classifier import BayesModel
from mxflow.checks.tokens import tokenize
from mxflow.mime import parse

FOLDS = 5


@dataclass(frozen=True)
class CorpusMessage:
    member: str
    is_spam: bool
    md5: str
    raw: bytes

    @property
    def fold(self) -> int:
        return int(self.md5, 16) % FOLDS


def read_corpus(directory: Path) -> Iterator[CorpusMessage]:
    """Every message of the corpus in manifest order, checked against its md5."""
    manifests = sorted(directory.glob("*MANIFEST*"))
    if not manifests:
        raise FileNotFoundError(f"no MANIFEST in {directory}")
    rows: list[tuple[str, str, str]] = []
    for line in manifests[0].read_text(encoding="utf-8").splitlines()[1:]:
        if line.strip():
            member, cls, _size, md5 = line.split("\t")
            rows.append((member, cls, md5))
    contents: dict[str, bytes] = {}
    for archive in sorted(directory.glob("*.tar.bz2")):
        with tarfile.open(archive, "r:bz2") as tar:
            for info in tar:
                if info.isfile():
                    f = tar.extractfile(info)
                    if f is not None:
                        contents[info.name.removeprefix("./")] = f.read()
    for member, cls, md5 in rows:
        raw = contents[member]
        if hashlib.md5(raw).hexdigest() != md5:
            raise ValueError(f"{member}: md5 does not match the manifest")
        yield CorpusMessage(member, cls == "spam", md5, raw)


def message_tokens(raw: bytes) -> list[str]:
    return tokenize(parse(raw))


def train(messages: Iterator[CorpusMessage] | list[CorpusMessage]) -> BayesModel:
    """Counts from every message, then the logistic weights fitted in fixed-seed passes."""
    return train_tokens([(message_tokens(m.raw), m.is_spam) for m in messages])


def train_tokens(data: list[tuple[list[str], bool]]) -> BayesModel:
    model = BayesModel()
    for tokens, is_spam in data:
        model.learn(tokens, is_spam, online=False)
    model.fit(data)
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train mxflow's content classifier.")
    parser.add_argument("corpus", type=Path, help="folder with the MANIFEST and archives")
    parser.add_argument("output", type=Path, help="model file to write (.gz)")
    args = parser.parse_args(argv)
    model = train(read_corpus(args.corpus))
    model.save(args.output)
    print(
        f"{args.output}: {model.nham} ham, {model.nspam} spam, {len(model.counts)} tokens",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
