"""Converted score_sde checkpoints compute exactly what score_sde_pytorch's own networks compute.

How the fixtures were made: ``scripts/make_conversion_fixtures.py /path/to/score_sde_pytorch`` (run by hand on a
checkout of https://github.com/yang-song/score_sde_pytorch at cb1f359, with ml_collections installed) built each
config's network with score_sde's own code (``models/ncsnpp.py``, ``models/ddpm.py``; its CUDA FIR op replaced by
the checkout's own pure-torch ``upfirdn2d_native``) at a tiny width (8x8 images, two levels), gave it random
float16-representable weights, restored them through score_sde's ``ExponentialMovingAverage.copy_to``, and
recorded on fixed inputs x and times t: the labels score_sde's ``get_score_fn`` feeds the network, the raw network
output, and the score. It also recorded, for every config of our table, the keys and shapes of the full-size
original network's state dict (``full_size_state_dicts.json``). Only those numbers are in tests/fixtures/conversion/ (safetensors); the original code is
not. Each test here writes a score_sde-format ``checkpoint.pth`` from them with `torch.save` of plain tensors
(score_sde's ``model`` state dict with its ``module.`` keys and float64 ``sigmas`` buffer, and its ``ema`` state
with ``shadow_params`` in ``model.parameters()`` order), so no pickle enters the repository.
"""

import hashlib
import importlib.util
import json
import os

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from scoresde_diffusers import ScoreSdePCPipeline, SubVPSDEScheduler, VESDEScheduler, VPSDEScheduler
from scoresde_diffusers.models import NCSNppModel, ScoreSdeDDPMModel
from scoresde_diffusers.models.score_sde_configs import (
    SCORE_SDE_CONFIGS,
    convert_score_sde_checkpoint,
    convert_score_sde_model,
    create_score_sde_model,
    create_score_sde_scheduler,
    get_score_sde_config,
    load_score_sde_checkpoint,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_DIR = os.path.join(ROOT, "tests", "fixtures", "conversion")
FIXTURES = sorted(f[: -len(".safetensors")] for f in os.listdir(FIXTURE_DIR) if f.endswith(".safetensors") and not f.startswith("weights_"))
CONFIG_FIXTURES = [f for f in FIXTURES if not f.startswith("variant_")]
# Of the output's scale (at least 1): float32 kernels round differently from one CPU to another (AVX2 and AVX-512
# differ by up to 1.3e-6 of the scale on these networks, whose VE outputs reach 150), and a conversion error is O(1).
TOLERANCE = 1e-5


class Fixture:
    """One fixture: the config, tiny overrides, score_sde's parameters and its recorded outputs."""

    def __init__(self, name: str):
        path = os.path.join(FIXTURE_DIR, name + ".safetensors")
        with safe_open(path, "pt") as handle:
            meta = handle.metadata()
        self.name = name
        self.data = load_file(path)
        self.config = get_score_sde_config(meta["config_name"])
        self.score_sde_config = json.loads(meta["score_sde_config"])
        self.overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(meta["model_overrides"]).items()}
        self.untrained = set(json.loads(meta["untrained_parameters"]))
        self.buffers = json.loads(meta["buffers"])
        weights_path = os.path.join(FIXTURE_DIR, meta["weights_file"])
        with safe_open(weights_path, "pt") as handle:
            self.parameter_order = json.loads(handle.metadata()["parameter_order"])
        self.parameters = {k: v.float() for k, v in load_file(weights_path).items()}

    def sigmas(self) -> torch.Tensor:
        # score_sde's models/utils.get_sigmas, which fills the network's float64 `sigmas` buffer.
        model = {**self.config.model, **self.overrides}
        return torch.tensor(np.exp(np.linspace(np.log(model["sigma_max"]), np.log(model["sigma_min"]), model["num_scales"])))

    def checkpoint(self, weights_in: str = "ema") -> dict:
        """score_sde's checkpoint dict, the fixture's weights in `weights_in` and zeros in the other slot."""
        trained = [k for k in self.parameter_order if k not in self.untrained]
        state = {key: self.sigmas() for key in self.buffers}
        for key in self.parameter_order:
            value = self.parameters[key]
            state[key] = value if key in self.untrained or weights_in == "model" else torch.zeros_like(value)
        shadow = [self.parameters[k] if weights_in == "ema" else torch.zeros_like(self.parameters[k]) for k in trained]
        return {"model": state, "ema": {"decay": 0.9999, "num_updates": 7, "shadow_params": shadow}, "step": 7}

    def save_checkpoint(self, directory, weights_in: str = "ema") -> str:
        path = os.path.join(str(directory), "checkpoint_7.pth")
        torch.save(self.checkpoint(weights_in), path)
        return path


@pytest.fixture(scope="module", autouse=True)
def no_grad():
    with torch.no_grad():
        yield


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "scripts", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def matches_score_sde(output: torch.Tensor, reference: torch.Tensor) -> bool:
    """Whether `output` is score_sde's `reference` up to float32 rounding: TOLERANCE of the larger of 1 and max |reference|."""
    return max_abs_diff(output.detach(), reference) <= TOLERANCE * max(1.0, float(reference.abs().max()))


# ---------------------------------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("name", FIXTURES)
def test_converted_network_reproduces_score_sde_outputs(name, tmp_path):
    fixture = Fixture(name)
    checkpoint = load_score_sde_checkpoint(fixture.save_checkpoint(tmp_path))
    model = convert_score_sde_model(checkpoint, fixture.config, **fixture.overrides)
    output = model(fixture.data["x"], fixture.data["labels"]).sample
    assert matches_score_sde(output, fixture.data["model_output"])


@pytest.mark.parametrize("name", CONFIG_FIXTURES)
def test_scheduler_feeds_the_network_score_sde_labels(name):
    fixture = Fixture(name)
    scheduler = create_score_sde_scheduler(fixture.config)
    labels = scheduler.t_to_timestep(fixture.data["t"].double())
    if fixture.config.timestep_type == "noise_level_index":
        labels = labels.round()  # the network rounds it to the nearest level, as score_sde's sampler does
    torch.testing.assert_close(labels.double(), fixture.data["labels"].double(), rtol=1e-6, atol=1e-6)


def _converted_score(fixture, tmp_path):
    checkpoint = load_score_sde_checkpoint(fixture.save_checkpoint(tmp_path))
    model = convert_score_sde_model(checkpoint, fixture.config, **fixture.overrides)
    scheduler = create_score_sde_scheduler(fixture.config)
    x, t = fixture.data["x"], fixture.data["t"]
    output = model(x, scheduler.t_to_timestep(t).to(torch.float32)).sample
    return scheduler.get_score(output, x, t)


@pytest.mark.parametrize("name", [f for f in CONFIG_FIXTURES if Fixture(f).config.sde == "vesde" or Fixture(f).config.continuous])
def test_score_matches_score_sde_score_fn(name, tmp_path):
    fixture = Fixture(name)
    score = _converted_score(fixture, tmp_path)
    relative = max_abs_diff(score, fixture.data["score"]) / float(fixture.data["score"].abs().max())
    assert relative <= 1e-4


@pytest.mark.parametrize("name", [f for f in CONFIG_FIXTURES if Fixture(f).config.sde != "vesde" and not Fixture(f).config.continuous])
def test_discrete_vp_score_uses_continuous_sigma_within_one_percent(name, tmp_path):
    """score_sde divides a discrete VP model's output by DDPM's discrete sqrt(1 - alpha_bar); our schedulers by the
    continuous sigma(t) of the same VP SDE. At the fixture's times (t = 0.07, 0.63) they differ by < 1%."""
    fixture = Fixture(name)
    score = _converted_score(fixture, tmp_path)
    relative = max_abs_diff(score, fixture.data["score"]) / float(fixture.data["score"].abs().max())
    assert relative <= 1e-2


@pytest.mark.parametrize("name", CONFIG_FIXTURES)
def test_config_table_matches_score_sde_config_file(name):
    fixture = Fixture(name)
    theirs, ours = fixture.score_sde_config, fixture.config
    model = theirs["model"]
    assert ours.sde == theirs["training"]["sde"] and ours.continuous == theirs["training"]["continuous"]
    assert ours.centered == theirs["data"]["centered"]
    assert ours.model["sample_size"] == theirs["data"]["image_size"] and ours.model["in_channels"] == theirs["data"]["num_channels"]
    for key in ("nf", "num_res_blocks", "dropout", "resamp_with_conv", "scale_by_sigma", "nonlinearity", "sigma_min", "sigma_max", "num_scales"):
        assert ours.model[key] == model[key], key
    for key in ("ch_mult", "attn_resolutions"):
        assert tuple(ours.model[key]) == tuple(model[key]), key
    if ours.model_class == "NCSNppModel":
        for key in ("fir", "skip_rescale", "resblock_type", "progressive", "progressive_input", "progressive_combine", "embedding_type", "init_scale", "conditional"):
            assert ours.model[key] == model[key], key
        assert tuple(ours.model["fir_kernel"]) == tuple(model["fir_kernel"])
        if model["embedding_type"] == "fourier":
            assert ours.model["fourier_scale"] == model["fourier_scale"]
    params = ours.scheduler_config()
    assert params["num_train_timesteps"] == model["num_scales"]
    if ours.sde != "vesde":
        assert (params["beta_min"], params["beta_max"]) == (model["beta_min"], model["beta_max"])
    for key in ("predictor", "corrector", "snr"):
        assert params[key] == theirs["sampling"][key], key
    assert params["correct_steps"] == theirs["sampling"]["n_steps_each"]


# ---------------------------------------------------------------------------------------------------- weights
def test_weights_model_converts_the_raw_weights(tmp_path):
    fixture = Fixture("ve__cifar10_ncsnpp_continuous")
    checkpoint = load_score_sde_checkpoint(fixture.save_checkpoint(tmp_path, weights_in="model"))
    model = convert_score_sde_model(checkpoint, fixture.config, weights="model", **fixture.overrides)
    output = model(fixture.data["x"], fixture.data["labels"]).sample
    assert matches_score_sde(output, fixture.data["model_output"])


def test_ema_weights_are_the_default(tmp_path):
    fixture = Fixture("ve__cifar10_ncsnpp_continuous")
    checkpoint = load_score_sde_checkpoint(fixture.save_checkpoint(tmp_path, weights_in="model"))
    model = convert_score_sde_model(checkpoint, fixture.config, **fixture.overrides)
    trained = [p for p in model.parameters() if p.requires_grad]
    assert all(float(p.abs().max()) == 0.0 for p in trained)


# ---------------------------------------------------------------------------------------------------- the CLI
def _cli_args(fixture, checkpoint, out, *extra):
    return ["--checkpoint_path", checkpoint, "--config", fixture.config.name, "--output_dir", str(out),
            "--model_overrides", json.dumps(fixture.overrides), *extra]


@pytest.mark.parametrize(
    "name, scheduler_class, data_range",
    [
        ("ve__celebahq_256_ncsnpp_continuous", VESDEScheduler, (0.0, 1.0)),
        ("ve__cifar10_ncsnpp", VESDEScheduler, (0.0, 1.0)),
        ("vp__ddpm__cifar10", VPSDEScheduler, (-1.0, 1.0)),
        ("subvp__cifar10_ddpmpp_continuous", SubVPSDEScheduler, (-1.0, 1.0)),
    ],
)
def test_cli_writes_a_pipeline_folder_that_loads_and_samples(name, scheduler_class, data_range, tmp_path):
    fixture = Fixture(name)
    out = tmp_path / "converted"
    load_script("convert_score_sde_checkpoint").main(_cli_args(fixture, fixture.save_checkpoint(tmp_path), out))
    pipe = ScoreSdePCPipeline.from_pretrained(str(out))
    assert isinstance(pipe.scheduler, scheduler_class) and pipe.data_range == data_range
    assert pipe.scheduler.config.timestep_type == fixture.config.timestep_type
    assert pipe.scheduler.config.prediction_type == fixture.config.prediction_type
    output = pipe.unet(fixture.data["x"], fixture.data["labels"]).sample
    assert matches_score_sde(output, fixture.data["model_output"])
    images = pipe(batch_size=1, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert images.shape == (1, 3, 8, 8) and torch.isfinite(images).all()


def test_cli_writes_a_model_card_naming_the_source(tmp_path):
    fixture = Fixture("vp__cifar10_ddpmpp_continuous")
    out = tmp_path / "converted"
    load_script("convert_score_sde_checkpoint").main(_cli_args(fixture, fixture.save_checkpoint(tmp_path), out))
    card = (out / "README.md").read_text()
    assert "score_sde_pytorch" in card and "vp/cifar10_ddpmpp_continuous" in card
    assert "checkpoint_7.pth" in card and "EMA" in card and "sha256" in card
    assert '"nf": 8' in card  # the tiny network's overrides are recorded


def test_cli_push_to_hub_uploads_the_folder(tmp_path, monkeypatch):
    script = load_script("convert_score_sde_checkpoint")
    calls = {}

    class Repo:
        repo_id = "user/ncsnpp-tiny"

    monkeypatch.setattr(script, "create_repo", lambda name, **kwargs: calls.setdefault("create", name) and Repo())
    monkeypatch.setattr(script, "upload_folder", lambda **kwargs: calls.setdefault("upload", kwargs))
    fixture = Fixture("ve__cifar10_ncsnpp")
    out = tmp_path / "converted"
    script.main(_cli_args(fixture, fixture.save_checkpoint(tmp_path), out, "--push_to_hub", "--hub_model_id", "ncsnpp-tiny"))
    assert calls["create"] == "ncsnpp-tiny"
    assert calls["upload"]["repo_id"] == "user/ncsnpp-tiny" and calls["upload"]["folder_path"] == str(out)
    assert 'from_pretrained("ncsnpp-tiny")' in (out / "README.md").read_text()


# ---------------------------------------------------------------------------------------------------- bad input
def test_unknown_config_name_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="Unknown score_sde config 've/cifar10_ncsnpp_shallow'") as info:
        get_score_sde_config("ve/cifar10_ncsnpp_shallow")
    assert all(name in str(info.value) for name in SCORE_SDE_CONFIGS)


def test_released_checkpoint_folder_names_resolve_to_their_configs():
    assert get_score_sde_config("vp/cifar10_ddpm").name == "vp/ddpm/cifar10"
    assert get_score_sde_config("ve/ffhq_1024_ncsnpp_continuous").name == "ve/ffhq_ncsnpp_continuous"
    assert get_score_sde_config("configs/ve/cifar10_ncsnpp.py").name == "ve/cifar10_ncsnpp"


class NotATensor:
    """A Python object inside a checkpoint: what weights-only loading must refuse."""


def test_checkpoint_holding_python_objects_is_refused_with_how_to_resave(tmp_path):
    path = str(tmp_path / "checkpoint_1.pth")
    torch.save({"model": {}, "config": NotATensor()}, path)
    with pytest.raises(ValueError, match="could run code") as info:
        load_score_sde_checkpoint(path)
    assert "torch.save(" in str(info.value) and "weights_only=False" in str(info.value)


def test_checkpoint_without_model_state_is_refused(tmp_path):
    path = str(tmp_path / "checkpoint_1.pth")
    torch.save({"optimizer": {}, "step": 3}, path)
    with pytest.raises(ValueError, match="expected a dict with 'model'"):
        load_score_sde_checkpoint(path)


def test_checkpoint_of_another_architecture_lists_missing_and_unexpected_keys(tmp_path):
    fixture = Fixture("ve__cifar10_ncsnpp_continuous")
    checkpoint = load_score_sde_checkpoint(fixture.save_checkpoint(tmp_path))
    ddpm = get_score_sde_config("vp/ddpm/cifar10")
    tiny_ddpm = {"sample_size": 8, "nf": 32, "ch_mult": (1, 1), "num_res_blocks": 1, "attn_resolutions": (4,)}
    with pytest.raises(ValueError, match="does not fit score_sde config 'vp/ddpm/cifar10'") as info:
        convert_score_sde_model(checkpoint, ddpm, **tiny_ddpm)
    message = str(info.value)
    assert "missing keys" in message and "unexpected keys" in message and "all_modules.0.W" in message


def test_checkpoint_of_a_config_with_other_noise_levels_is_refused(tmp_path):
    church = Fixture("ve__church_ncsnpp_continuous")
    checkpoint = load_score_sde_checkpoint(church.save_checkpoint(tmp_path))
    with pytest.raises(ValueError, match="noise levels .* are not those of score_sde config 've/ffhq_256_ncsnpp_continuous'"):
        convert_score_sde_model(checkpoint, get_score_sde_config("ve/ffhq_256_ncsnpp_continuous"), **church.overrides)


def test_ema_with_the_wrong_number_of_tensors_is_refused(tmp_path):
    fixture = Fixture("vp__cifar10_ddpmpp")
    checkpoint = fixture.checkpoint()
    checkpoint["ema"]["shadow_params"] = checkpoint["ema"]["shadow_params"][:-1]
    with pytest.raises(ValueError, match="EMA holds .* tensors but .* trains"):
        convert_score_sde_model(checkpoint, fixture.config, **fixture.overrides)


def test_unknown_weights_choice_is_refused(tmp_path):
    fixture = Fixture("vp__cifar10_ddpmpp")
    with pytest.raises(ValueError, match="weights must be one of 'ema', 'model'"):
        convert_score_sde_model(fixture.checkpoint(), fixture.config, weights="shadow", **fixture.overrides)


def test_unknown_model_override_is_refused(tmp_path):
    fixture = Fixture("vp__cifar10_ddpmpp")
    path = fixture.save_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="Unknown model config keys \\['width'\\]"):
        convert_score_sde_checkpoint(path, fixture.config.name, str(tmp_path / "out"), model_overrides={"width": 8})


FULL_SIZE = json.load(open(os.path.join(FIXTURE_DIR, "full_size_state_dicts.json")))


@pytest.mark.parametrize("name", sorted(SCORE_SDE_CONFIGS))
def test_full_size_network_has_score_sde_state_dict_layout(name):
    """Every config's real-size network has the original's state-dict keys and shapes, in order (built on the meta
    device: shapes without memory)."""
    with torch.device("meta"):
        model = create_score_sde_model(SCORE_SDE_CONFIGS[name])
    layout = [[key, list(value.shape)] for key, value in model.state_dict().items()]
    expected = FULL_SIZE[name]
    assert (len(layout), sum(p.numel() for p in model.parameters())) == (expected["num_tensors"], expected["num_parameters"])
    assert hashlib.sha256(json.dumps(layout).encode()).hexdigest() == expected["sha256"]


def test_every_config_builds_its_model_class():
    classes = {"NCSNppModel": NCSNppModel, "ScoreSdeDDPMModel": ScoreSdeDDPMModel}
    tiny = {"sample_size": 8, "ch_mult": (1, 1), "num_res_blocks": 1, "attn_resolutions": (4,)}
    for config in SCORE_SDE_CONFIGS.values():
        model = classes[config.model_class](**{**config.model, **tiny, "nf": 32})
        assert model.sigmas.shape == (config.sde_params["num_scales"],)
