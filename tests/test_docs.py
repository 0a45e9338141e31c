"""Every example in README.md and docs/ runs, and so does every `>>>` example in a public docstring."""

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(path: Path):
    return PYTHON_BLOCK.findall(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", [p for p in DOC_FILES if python_blocks(p)], ids=lambda p: p.name)
def test_every_python_block_of_the_page_runs(path, tmp_path, monkeypatch):
    # Blocks of one page run in order in one namespace, as a reader would run them, inside a scratch folder.
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    for number, block in enumerate(python_blocks(path), start=1):
        try:
            exec(compile(block, f"{path.name} block {number}", "exec"), namespace)
        except Exception as error:  # pragma: no cover - the message is the point
            raise AssertionError(f"{path.name}, python block {number} failed: {error!r}\n{block}") from error


def _public_modules():
    # schedulers/ and pipelines/ are installed into the namespace from their own folders, so walk each root.
    for root in ("scoresde_diffusers", "scoresde_diffusers.schedulers", "scoresde_diffusers.pipelines"):
        package = importlib.import_module(root)
        yield root
        for info in pkgutil.walk_packages(package.__path__, root + "."):
            yield info.name


def _docstring_examples():
    finder = doctest.DocTestFinder(exclude_empty=True)
    for name in sorted(set(_public_modules())):
        module = importlib.import_module(name)
        for test in finder.find(module):
            if test.examples and test.name.startswith(name):
                yield pytest.param(test, id=test.name)


@pytest.mark.parametrize("test", list(_docstring_examples()))
def test_docstring_example_runs(test, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.failures == 0, f"the >>> example of {test.name} failed (see the output above)"


SOURCE_FILES = [
    path
    for folder in ("scoresde_diffusers", "schedulers", "pipelines", "examples", "benchmarks", "tests", "docs")
    for path in sorted((ROOT / folder).rglob("*"))
    if path.suffix in (".py", ".md")
] + [ROOT / "README.md", ROOT / "setup.py"]
OUTSIDE_CITATION = re.compile(r"\.\./shared|shared/(?:reference|DESIGN\.md|STYLE\.md)|references? 00\d")


def test_no_code_or_page_cites_a_file_outside_the_repository():
    # A reader of the package has the paper, not the planning notes the project started from: cite the paper.
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in SOURCE_FILES
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if OUTSIDE_CITATION.search(line) and path.name != "test_docs.py"
    ]
    assert not offenders, f"citations of files outside the repository at {offenders}"
