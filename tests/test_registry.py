"""Specification of the plugin registries: decorator registration, clear errors, and entry-point plugins.

Specification (one generic `Registry`, entry-point groups
``scoresde_diffusers.{sdes,predictors,correctors,timestep_maps,ode_solvers}``, a duplicate name is an error, an
unknown name is a `ValueError` listing the registered names).
"""

import importlib
import subprocess
import sys
import textwrap

import pytest
import torch

from scoresde_diffusers.registry import CORRECTORS, ODE_SOLVERS, PREDICTORS, SDES, TIMESTEP_MAPS, Registry
from scoresde_diffusers.sdes import VPSDE, get_sde


@pytest.fixture
def registry():
    """A fresh registry on a group no installed package uses."""
    return Registry("widget", "scoresde_diffusers_tests.widgets")


def test_decorator_registers_and_returns_the_object(registry):
    @registry.register("double")
    def double(x):
        return 2 * x

    assert registry.get("double") is double
    assert double(2) == 4  # the decorator hands the function back unchanged
    assert "double" in registry and list(registry) == ["double"]


def test_register_by_call(registry):
    obj = object()
    assert registry.register("thing", obj) is obj
    assert registry.get("thing") is obj


def test_registering_a_duplicate_name_raises(registry):
    registry.register("a", len)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a", abs)
    assert registry.get("a") is len  # the first registration stands
    registry.register("a", len)  # registering the very same object again is harmless (module re-import)


@pytest.mark.parametrize("name", ["", None, 3])
def test_name_must_be_a_non_empty_string(registry, name):
    with pytest.raises(ValueError, match="non-empty string"):
        registry.register(name, len)


def test_unknown_name_error_lists_the_registered_names(registry):
    registry.register("alpha", 1)
    registry.register("beta", 2)
    with pytest.raises(ValueError) as info:
        registry.get("gamma")
    message = str(info.value)
    assert "widget" in message and "'gamma'" in message and "alpha, beta" in message


def test_unregister_removes_and_returns(registry):
    registry.register("alpha", 1)
    assert registry.unregister("alpha") == 1
    assert "alpha" not in registry
    with pytest.raises(ValueError, match="Unknown widget 'alpha'"):
        registry.unregister("alpha")


def test_built_in_entries_are_registered():
    assert {"ve", "vp", "subvp"} <= set(SDES.names())
    assert {"euler_maruyama", "reverse_diffusion", "ancestral_sampling"} <= set(PREDICTORS.names())
    assert {"discrete", "scaled", "continuous", "sigma"} <= set(TIMESTEP_MAPS.names())
    assert len(CORRECTORS.names()) > 0
    for reg in (SDES, PREDICTORS, CORRECTORS, TIMESTEP_MAPS, ODE_SOLVERS):
        assert reg.group.startswith("scoresde_diffusers.")


def test_get_sde_unknown_name_lists_sdes():
    with pytest.raises(ValueError, match="ve, vp"):
        get_sde("ou")


# ---------------------------------------------------------------------------------------------------------------------
# An entry-point plugin, installed for real with pip into a temporary site directory
# ---------------------------------------------------------------------------------------------------------------------
PLUGIN_PYPROJECT = """
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "tiny-sde-plugin"
version = "0.0.1"

[tool.setuptools]
packages = ["tiny_sde_plugin"]

[project.entry-points."scoresde_diffusers.predictors"]
tiny_predictor = "tiny_sde_plugin.plugin:tiny_predictor"

[project.entry-points."scoresde_diffusers.sdes"]
tiny = "tiny_sde_plugin.plugin:TinySDE"
"""

PLUGIN_MODULE = '''
"""A third-party plugin: it imports scoresde_diffusers but registers nothing itself; entry points do that."""
from scoresde_diffusers.sdes import VPSDE


def tiny_predictor(sde, x, t, t_next, score, noise):
    """Does nothing: returns x as both sample and mean."""
    return x, x


class TinySDE(VPSDE):
    """A VP SDE with a constant beta."""

    name = "tiny"

    def __init__(self, beta=1.0):
        super().__init__(beta_min=beta, beta_max=beta)
'''


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """Build and install `tiny_sde_plugin` with pip (offline, no build isolation: the venv's setuptools builds it)
    into tmp_path/site, put that on sys.path, and afterwards leave the registries and sys.modules as they were."""
    pkg_dir, site_dir = tmp_path / "tiny_sde_plugin_src", tmp_path / "site"
    (pkg_dir / "tiny_sde_plugin").mkdir(parents=True)
    (pkg_dir / "pyproject.toml").write_text(textwrap.dedent(PLUGIN_PYPROJECT))
    (pkg_dir / "tiny_sde_plugin" / "__init__.py").write_text("")
    (pkg_dir / "tiny_sde_plugin" / "plugin.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--no-cache-dir", "--disable-pip-version-check", "--quiet", "--target", str(site_dir), str(pkg_dir)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert any(site_dir.glob("tiny_sde_plugin-0.0.1.dist-info/entry_points.txt"))

    monkeypatch.syspath_prepend(str(site_dir))  # also invalidates import caches
    importlib.invalidate_caches()
    before = {reg.group: set(reg._entries) for reg in (SDES, PREDICTORS)}
    try:
        yield
    finally:
        # Remove whatever the plugin added, so later tests see the registries unchanged.
        for reg in (SDES, PREDICTORS):
            for name in set(reg._entries) - before[reg.group]:
                reg.unregister(name)
        for module in [m for m in sys.modules if m == "tiny_sde_plugin" or m.startswith("tiny_sde_plugin.")]:
            del sys.modules[module]


def test_entry_point_plugin_is_picked_up(installed_plugin):
    for reg in (SDES, PREDICTORS):
        reg.reload_entry_points()
    plugin = importlib.import_module("tiny_sde_plugin.plugin")
    assert PREDICTORS.get("tiny_predictor") is plugin.tiny_predictor
    assert "tiny" in SDES.names()
    sde = get_sde("tiny", beta=2.0)
    assert isinstance(sde, plugin.TinySDE) and isinstance(sde, VPSDE)
    # It is a working SDE: constant beta = 2 gives log m(t) = -t exactly.
    t = torch.tensor([0.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(sde.log_mean_coeff(t), -t)


def test_plugin_entries_are_gone_after_the_plugin_test():
    # Runs after test_entry_point_plugin_is_picked_up (file order): the fixture's cleanup left no trace.
    assert "tiny" not in SDES._entries and "tiny_predictor" not in PREDICTORS._entries
    assert "tiny_sde_plugin" not in sys.modules
    with pytest.raises(ValueError):
        get_sde("tiny")
