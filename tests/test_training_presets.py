"""`examples/train.py --preset <score_sde config>` trains the paper's exact network with the paper's recipe.

Each family is smoke-trained at tiny width for two steps on the digits (its preset values checked in the saved
training_config.json); the saved pipeline loads with the paper's network and scheduler and samples."""

import json

import pytest
import torch

from scoresde_diffusers import NCSNppModel, ScoreSdeDDPMModel
from scoresde_diffusers.pipelines import ScoreSdePCPipeline
from scoresde_diffusers.training import parse_args, train

TINY = ["--width", "32", "--channel_mult", "1", "1", "--layers_per_block", "1", "--attention_resolutions", "4"]
RUN = ["--max_train_steps", "2", "--train_batch_size", "16", "--sample_every", "0", "--num_sample_images", "4",
       "--num_inference_steps", "3", "--report_to", "none", "--no-progress_bar", "--checkpointing_steps", "100"]

FAMILIES = {
    # preset: (network class, loss, EMA decay, reduce_mean, data range, timestep map)
    "ve/cifar10_ncsnpp_continuous": (NCSNppModel, "dsm", 0.999, False, [0.0, 1.0], "sigma"),
    "ve/cifar10_ncsnpp": (NCSNppModel, "smld", 0.999, False, [0.0, 1.0], "noise_level_index"),
    "vp/cifar10_ddpmpp_continuous": (NCSNppModel, "dsm", 0.9999, True, [-1.0, 1.0], "scaled"),
    "vp/cifar10_ddpmpp": (NCSNppModel, "ddpm", 0.9999, True, [-1.0, 1.0], "scaled"),
    "vp/ddpm/cifar10": (ScoreSdeDDPMModel, "ddpm", 0.9999, True, [-1.0, 1.0], "scaled"),
    "subvp/cifar10_ddpmpp_deep_continuous": (NCSNppModel, "dsm", 0.9999, True, [-1.0, 1.0], "scaled"),
}


@pytest.mark.parametrize("preset", sorted(FAMILIES))
def test_a_preset_trains_the_papers_network_with_the_papers_recipe(preset, tmp_path):
    network, loss, ema_decay, reduce_mean, data_range, timestep_type = FAMILIES[preset]
    out = tmp_path / "run"
    train(parse_args(["--preset", preset, "--output_dir", str(out), *TINY, *RUN]))
    config = json.loads((out / "training_config.json").read_text())
    recipe = {k: config[k] for k in ("learning_rate", "lr_warmup_steps", "max_grad_norm", "ema_decay", "loss", "reduce_mean")}
    assert recipe == {"learning_rate": 2e-4, "lr_warmup_steps": 5000, "max_grad_norm": 1.0, "ema_decay": ema_decay, "loss": loss, "reduce_mean": reduce_mean}
    assert (config["width"], config["layers_per_block"]) == (32, 1)  # given on the command line: kept
    pipe = ScoreSdePCPipeline.from_pretrained(out)
    assert isinstance(pipe.unet, network) and list(pipe.data_range) == data_range
    assert pipe.scheduler.config.timestep_type == timestep_type
    pipe.set_progress_bar_config(disable=True)
    assert torch.isfinite(pipe(batch_size=2, num_inference_steps=3, output_type="pt").images).all()


def test_options_left_at_their_defaults_take_the_presets_values():
    config = parse_args(["--preset", "vp/cifar10_ddpmpp_deep_continuous"])
    assert (config.width, config.layers_per_block, config.channel_mult, config.dropout) == (128, 8, [1, 2, 2, 2], 0.1)
    assert (config.train_batch_size, config.sde, config.beta_max) == (128, "vp", 20.0)


def test_an_unknown_preset_lists_the_known_ones(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--preset", "vp/cifar10_ddpmpp_contnuous"])
    assert "vp/cifar10_ddpmpp_continuous" in capsys.readouterr().err


def test_a_preset_refuses_vector_data(tmp_path):
    with pytest.raises(ValueError, match="is an image network"):
        train(parse_args(["--preset", "vp/cifar10_ddpmpp_continuous", "--dataset", "four_gaussians", "--output_dir", str(tmp_path / "x"), *RUN]))
