"""Run ONE fuzz target under atheris (libFuzzer): `python -m fuzz.one TARGET [libFuzzer args]`.

mxflow's modules are imported inside `atheris.instrument_imports()`, so coverage of our
own code steers the fuzzer. A finding stops the run with a non-zero status and leaves
the input as `crash-*` (or `timeout-*`) where `-artifact_prefix=` says.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["mxflow", "dkim"]):
    from fuzz.targets import TARGETS


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: python -m fuzz.one TARGET [libFuzzer options]; TARGET in {list(TARGETS)}")
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
