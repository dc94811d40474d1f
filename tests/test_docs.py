"""Documentation stays inside the repository: no tracked file cites notes or papers that a fresh
clone does not have, every ``docs/*.md`` that a file names exists, and the README links every
page of ``docs/``."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# a path segment "notes/" or "papers/" (also as "../shared/notes/..."), or "the issue notes"
CITATION = re.compile(r"(?:^|[\s(\"'`/])(?:notes|papers)/|\bissue notes\b", re.IGNORECASE)
# data files that live beside the notes in the dev/CI data folder: read as data, not cited
DATA_PATHS = ("shared/notes/lce_arm_ops.csv",)
DOC_REF = re.compile(r"\bdocs/([\w.-]+\.md)\b")


def tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = []
    for name in filter(None, out.split("\0")):
        path = ROOT / name
        if not path.is_file() or path == Path(__file__).resolve():
            continue
        try:
            files.append((path, path.read_text(encoding="utf-8")))
        except UnicodeDecodeError:  # binary (images, archives): nothing to cite
            continue
    return files


def test_no_citation_points_outside_the_repository():
    found = []
    for path, text in tracked_text_files():
        for number, line in enumerate(text.splitlines(), 1):
            for data in DATA_PATHS:
                line = line.replace(data, "")
            if CITATION.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "cite docs/ or the paper instead of:\n" + "\n".join(found)


def test_the_pattern_catches_what_it_must():
    for line in (
        "(notes/datasets.md §7)",
        "as papers/binaryfacenet.md §3.2",
        "Sources: ../shared/notes/lce_arm.md",
        "commands in the issue notes",
        "../shared/papers/x.md",
    ):
        assert CITATION.search(line), line
    for line in ("docs/papers.md", "docs/datasets.md, SCface", "release_notes.txt"):
        assert not CITATION.search(line), line


def test_every_named_doc_exists_and_the_readme_links_every_doc():
    docs = {p.name for p in (ROOT / "docs").glob("*.md")}
    missing = []
    for path, text in tracked_text_files():
        for name in DOC_REF.findall(text):
            if name not in docs:
                missing.append(f"{path.relative_to(ROOT)}: docs/{name}")
    assert not missing, "no such page:\n" + "\n".join(missing)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    unlinked = sorted(n for n in docs if f"(docs/{n})" not in readme)
    assert not unlinked, f"README.md does not link {unlinked}"
