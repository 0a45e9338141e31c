"""The package imports lazily: the SDE mathematics loads without diffusers, and every public name resolves."""

import subprocess
import sys

import pytest

import scoresde_diffusers

HEAVY_MODULES = ("diffusers", "accelerate", "datasets", "scoresde_diffusers.pipelines", "scoresde_diffusers.training")


def _modules_loaded_by(statement: str):
    code = f"import sys\n{statement}\nprint(' '.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return result.stdout.split()


@pytest.mark.parametrize(
    "statement",
    [
        "import scoresde_diffusers.sdes",
        "from scoresde_diffusers import VPSDE, get_sde",
        "from scoresde_diffusers import PREDICTORS, CORRECTORS, ODE_SOLVERS",
        "import scoresde_diffusers.likelihood",
    ],
)
def test_the_mathematics_loads_without_diffusers_or_the_trainer(statement):
    assert _modules_loaded_by(statement) == []


@pytest.mark.parametrize("name", scoresde_diffusers.__all__)
def test_every_public_name_resolves(name):
    assert getattr(scoresde_diffusers, name) is not None


def test_registries_come_filled_with_the_built_in_entries():
    assert {"euler_maruyama", "reverse_diffusion"} <= set(scoresde_diffusers.PREDICTORS.names())
    assert {"ve", "vp", "subvp"} <= set(scoresde_diffusers.SDES.names())


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'NoSuchScheduler'"):
        scoresde_diffusers.NoSuchScheduler
