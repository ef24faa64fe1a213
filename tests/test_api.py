"""The public API: every name in ``imgdedup.__all__`` loads, and every docstring example runs."""
from __future__ import annotations

import doctest

import pytest

import imgdedup


def _examples() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(recurse=False)
    return [test for name in imgdedup.__all__ for test in finder.find(getattr(imgdedup, name), name)
            if test.examples]


EXAMPLES = _examples()


def test_every_public_name_loads_and_is_documented():
    for name in imgdedup.__all__:
        assert getattr(imgdedup, name).__doc__, name
    with pytest.raises(AttributeError):
        imgdedup.no_such_name  # noqa: B018


def test_the_front_door_has_examples():
    documented = {test.name for test in EXAMPLES}
    assert {"find_duplicates", "hash_files", "Store", "Ingestor", "run_bulk", "load_key", "load_config"} <= documented


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda test: test.name)
def test_docstring_example_runs(example, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    output: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(example, out=output.append, clear_globs=True)
    assert runner.failures == 0, "".join(output)
