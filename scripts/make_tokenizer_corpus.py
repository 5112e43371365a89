#!/usr/bin/env python3
"""Builds the tokenizer test corpus: the documents that tests/tokenizer_test.cpp tokenizes and compares
with llama.cpp's ids in tests/data/tokenizer/golden_*.txt.

The corpus is deterministic and the C++ test rebuilds it with the same rules:
  * "wiki" documents: the first 163840 bytes (160 KiB) of <data>/wikitext2/wiki.test.reconstructed.raw,
    cut after the last '\\n' in them, split into lines (each keeps its '\\n'); lines are appended to the
    current document, which is closed as soon as it holds >= 2048 bytes (the last may be shorter).
  * "mixed" documents: tests/data/tokenizer/mixed.txt split on the separator "\\n=====DOC=====\\n".
  * "hostile" documents: tests/data/tokenizer/hostile.hex, one document per line as hex bytes
    (invalid UTF-8, NUL bytes, ...); not part of the "all" set.
Document order: wiki, then mixed. <data> is $TAPPA_DATA_DIR or <repo>/../shared/data.

Usage: scripts/make_tokenizer_corpus.py OUT_DIR
Writes OUT_DIR/{all,mixed,hostile}/NNNNN.txt (raw bytes, one file per document) and prints the counts.
"""
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WIKI_BYTES = 163840
WIKI_DOC_MIN = 2048
MIXED_SEP = b"\n=====DOC=====\n"


def data_dir() -> Path:
    env = os.environ.get("TAPPA_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data"


def wiki_docs() -> list[bytes]:
    raw = (data_dir() / "wikitext2" / "wiki.test.reconstructed.raw").read_bytes()[:WIKI_BYTES]
    raw = raw[: raw.rfind(b"\n") + 1]
    docs, cur = [], b""
    lines = raw.split(b"\n")[:-1]  # raw ends with '\n'
    for line in lines:
        cur += line + b"\n"
        if len(cur) >= WIKI_DOC_MIN:
            docs.append(cur)
            cur = b""
    if cur:
        docs.append(cur)
    return docs


def mixed_docs() -> list[bytes]:
    return (REPO / "tests" / "data" / "tokenizer" / "mixed.txt").read_bytes().split(MIXED_SEP)


def hostile_docs() -> list[bytes]:
    text = (REPO / "tests" / "data" / "tokenizer" / "hostile.hex").read_text()
    return [bytes.fromhex(line) for line in text.splitlines() if line and not line.startswith("#")]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[1])
    wiki, mixed, hostile = wiki_docs(), mixed_docs(), hostile_docs()
    sets = {"all": wiki + mixed, "mixed": mixed, "hostile": hostile}
    for name, docs in sets.items():
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("*.txt"):
            old.unlink()
        for i, doc in enumerate(docs):
            (d / f"{i:05d}.txt").write_bytes(doc)
    total = sum(len(x) for x in sets["all"])
    print(f"wiki docs: {len(wiki)} ({sum(len(x) for x in wiki)} bytes), mixed docs: {len(mixed)} "
          f"({sum(len(x) for x in mixed)} bytes), all: {len(sets['all'])} docs / {total} bytes, "
          f"hostile docs: {len(hostile)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
