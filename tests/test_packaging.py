"""What `pip install scoresde_diffusers[...]` brings: the core needs no plotting library, FID / KID get what they
need from the ``eval`` extra, and nothing is required that the code never imports."""

import re
from importlib.metadata import requires
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _requirements():
    """{extra or None: set of distribution names} from the installed package's metadata."""
    by_extra = {}
    for line in requires("scoresde_diffusers") or []:
        name = re.split(r"[ ;<>=!\[]", line, maxsplit=1)[0].lower()
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", line)
        by_extra.setdefault(extra.group(1) if extra else None, set()).add(name)
    return by_extra


def test_the_core_install_has_no_plotting_library():
    assert "matplotlib" not in _requirements()[None]
    assert "matplotlib" in _requirements()["train"]


def test_the_eval_extra_has_what_inception_fid_and_kid_need():
    assert {"torchmetrics", "torch-fidelity"} <= _requirements()["eval"]


def test_no_requirement_is_a_package_the_code_never_imports():
    sources = "\n".join(p.read_text(encoding="utf-8") for folder in ("scoresde_diffusers", "schedulers", "pipelines", "examples") for p in (ROOT / folder).rglob("*.py"))
    assert "transformers" not in set().union(*_requirements().values())
    assert not re.search(r"^\s*(import|from) transformers", sources, re.MULTILINE)
