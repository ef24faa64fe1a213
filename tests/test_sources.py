"""The repository's own text files: nothing a half-finished merge leaves behind is published."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Folders and files whose text ships in the package, its docs or its scripts.
PUBLISHED = ["README.md", "Makefile", "pyproject.toml", "conf", "docs", "imgdedup", "jobs", "pipeline", "scripts",
             "tests"]
SUFFIXES = {".py", ".md", ".toml", ".sh", ".txt", ".cfg", ""}
#: A line git writes around each side of a conflict.
CONFLICT_MARKER = re.compile(r"^(<{7}|={7}|>{7})( |$)", re.MULTILINE)


def published_text_files() -> list[Path]:
    files = []
    for entry in PUBLISHED:
        path = REPO / entry
        candidates = path.rglob("*") if path.is_dir() else [path]
        files += [p for p in candidates if p.is_file() and p.suffix in SUFFIXES and "__pycache__" not in p.parts]
    return sorted(files)


def test_no_file_holds_a_merge_conflict_marker():
    files = published_text_files()
    assert len(files) > 50  # the walk found the tree
    marked = [f"{p.relative_to(REPO)}:{p.read_text(errors='replace')[:m.start()].count(chr(10)) + 1}"
              for p in files for m in [CONFLICT_MARKER.search(p.read_text(errors="replace"))] if m]
    assert marked == []


def test_every_compiled_function_caches_only_where_a_cache_folder_was_found():
    # cache=True fails at import where no folder is writable (no HOME, a read-only install):
    # compiled functions take pipeline.compile_cache's verdict instead (tests/faults/test_read_only.py).
    sources = sorted((REPO / "pipeline").rglob("*.py")) + sorted((REPO / "jobs").rglob("*.py"))
    decorator = re.compile(r"jit\(.*\bcache\s*=\s*True\b")
    hard_coded = [f"{p.relative_to(REPO)}:{n}" for p in sources
                  for n, line in enumerate(p.read_text().splitlines(), 1) if decorator.search(line)]
    assert hard_coded == []
