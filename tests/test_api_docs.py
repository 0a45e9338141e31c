"""docs/api.md names every public name of the package, so the API page cannot fall behind the code."""

import re
from pathlib import Path

import scoresde_diffusers

API_PAGE = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_every_public_name_is_importable_from_the_top_level():
    for name in scoresde_diffusers.__all__:
        assert getattr(scoresde_diffusers, name) is not None, name


def test_api_page_names_every_public_name():
    documented = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)", API_PAGE.read_text(encoding="utf-8")))
    missing = sorted(set(scoresde_diffusers.__all__) - documented)
    assert not missing, f"docs/api.md does not mention: {missing}"
