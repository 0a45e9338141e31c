"""Command lines and runs a user can read: every option of every example has help text and shows its default, one
flag style (underscores), long periodic work is announced, and the model card names the sampler that runs."""

import importlib.util
import logging
import re
from pathlib import Path

import argparse
import pytest

from scoresde_diffusers.training import TrainingConfig, build_parser, train
from scoresde_diffusers.training.classifier import build_classifier_parser
from scoresde_diffusers.training.hub import describe_sampler

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _example_module(name):
    spec = importlib.util.spec_from_file_location(f"{name}_example_cli", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _evaluate_module():
    return _example_module("evaluate")


PARSERS = {
    "train.py": build_parser,
    "train_classifier.py": build_classifier_parser,
    "evaluate.py": lambda: _evaluate_module().build_parser(),
    "four_gaussians.py": lambda: _example_module("four_gaussians").build_parser(),
}


def _visible_options(parser):
    return [a for a in parser._actions if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)]


@pytest.mark.parametrize("script", sorted(PARSERS))
def test_every_option_has_help_and_shows_its_default(script):
    parser = PARSERS[script]()
    options = parser.format_help().split("\noptions:\n", 1)[1]
    entries = {entry.split()[0].rstrip(","): entry for entry in re.split(r"\n  (?=-)", "\n" + options) if entry.strip()}
    for action in _visible_options(parser):
        assert action.help and action.help.strip(), f"{script}: {action.option_strings} has no help"
        assert "(default:" in entries[action.option_strings[0]], f"{script}: {action.option_strings[0]} does not show its default"


@pytest.mark.parametrize("script", sorted(PARSERS))
def test_one_flag_style_underscores(script):
    for action in _visible_options(PARSERS[script]()):
        for flag in action.option_strings:
            name = flag[len("--no-") :] if flag.startswith("--no-") else flag[2:]
            assert "-" not in name, f"{script}: {flag} uses dashes"


DOC_PAGES = [EXAMPLES.parent / "README.md", *sorted((EXAMPLES.parent / "docs").glob("*.md"))]
EXAMPLE_COMMAND = re.compile(r"examples/(\w+\.py)((?:[^\n`]|\\\n)*)")


def _documented_commands():
    for page in DOC_PAGES:
        for match in EXAMPLE_COMMAND.finditer(page.read_text(encoding="utf-8")):
            if match.group(1) in PARSERS:
                yield page.name, match.group(1), re.findall(r"(?<![\w-])--[\w-]+", match.group(2))


def test_documented_commands_use_the_flags_the_help_shows():
    """A command in the README or docs/ spells every flag as ``--help`` shows it (underscores), not as a hidden alias."""
    shown = {script: {"--help", *(flag for action in _visible_options(PARSERS[script]()) for flag in action.option_strings)} for script in PARSERS}
    commands = list(_documented_commands())
    assert len(commands) > 20
    offenders = {f"{page}: {script} {flag}" for page, script, flags in commands for flag in flags if flag not in shown[script]}
    assert not offenders, f"flags the scripts' help does not show: {sorted(offenders)}"


def test_evaluate_keeps_its_dashed_flags_as_hidden_aliases():
    parser = _evaluate_module().build_parser()
    args = parser.parse_args(["--pipeline", "p", "--num-samples", "5", "--no-fid", "--bpd-rtol", "0.01"])
    assert (args.num_samples, args.no_fid, args.bpd_rtol) == (5, True, 0.01)
    assert parser.parse_args(["--pipeline", "p"]).num_samples == 1000
    assert "--num-samples" not in parser.format_help()


def test_train_docstring_shows_the_two_process_cpu_command_that_works():
    doc = (EXAMPLES / "train.py").read_text()
    assert "accelerate launch --multi_gpu --num_processes 2 examples/train.py --cpu" in doc
    assert not re.search(r"accelerate launch --num_processes \d+ --cpu", doc)


def test_checkpoints_and_sample_grids_are_announced_in_the_log(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    train(TrainingConfig(
        output_dir=str(tmp_path), dataset="four_gaussians", num_samples=256, train_batch_size=64, mlp_hidden_dim=16, mlp_layers=1,
        max_train_steps=4, checkpointing_steps=2, sample_every=2, num_sample_images=8, num_inference_steps=3, report_to="none", progress_bar=False,
    ))  # fmt: skip
    messages = [r.getMessage() for r in caplog.records]
    for what in ("Step 2: writing checkpoint-2", "Step 2: sampling 8 images (3 steps) into samples/step-0000002.png", "Step 4: writing checkpoint-4"):
        assert any(m == f"{what} ..." for m in messages), what
        assert any(m.startswith(f"{what}: done in ") for m in messages), what


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"predictor": "euler_maruyama", "corrector": "none", "snr": 0.16}, "Euler-Maruyama (no corrector)"),
        ({"predictor": "reverse_diffusion", "corrector": "langevin", "snr": 0.16}, "predictor-corrector: reverse diffusion + Langevin (snr 0.16)"),
        ({"predictor": "none", "corrector": "ald", "snr": 0.2}, "annealed Langevin dynamics only (no predictor, snr 0.2)"),
    ],
)
def test_samplers_are_named_by_what_runs(config, expected):
    assert describe_sampler(config) == expected


@pytest.fixture(scope="module")
def trained_folder(tmp_path_factory):
    """The folder of a two-step train() run on the 2-D mixture (one run for the model-card tests)."""
    out = tmp_path_factory.mktemp("card") / "run"
    train(TrainingConfig(
        output_dir=str(out), dataset="four_gaussians", num_samples=256, train_batch_size=64, mlp_hidden_dim=16, mlp_layers=1,
        max_train_steps=2, checkpointing_steps=2, sample_every=0, num_sample_images=8, num_inference_steps=3, report_to="none", progress_bar=False,
    ))  # fmt: skip
    return out


def test_the_model_card_names_the_saved_sampler(trained_folder):
    out = trained_folder
    card = (out / "README.md").read_text()
    assert "**Sampler:** Euler-Maruyama (no corrector)" in card and "Euler-Maruyama (no corrector), 3 steps" in card


def test_the_model_card_one_liner_loads_the_trained_folder(trained_folder):
    """The generic-loading line of the card, run as written on the folder train() wrote."""
    import torch

    out = trained_folder
    card = (out / "README.md").read_text()
    (line,) = [l for l in card.splitlines() if l.startswith("pipe = DiffusionPipeline.from_pretrained(")]
    namespace = {}
    exec("from diffusers import DiffusionPipeline\n" + line, namespace)
    pipe = namespace["pipe"]
    assert type(pipe).__name__ == "ScoreSdePCPipeline"
    pipe.set_progress_bar_config(disable=True)
    assert pipe(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt").images.shape == (2, 2)


def _digits_pipeline(folder):
    """An exact-score Gaussian-mixture "model" of 8x8 one-channel images, saved as a pipeline."""
    import torch

    from scoresde_diffusers import GaussianMixtureScoreModel, VPSDEScheduler
    from scoresde_diffusers.pipelines import ScoreSdeODEPipeline

    scheduler = VPSDEScheduler()
    means = torch.rand(2, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 0.5
    model = GaussianMixtureScoreModel.from_mixture([0.5, 0.5], means, [0.5, 0.5], scheduler=scheduler, sample_size=8, in_channels=1)
    ScoreSdeODEPipeline(unet=model, scheduler=scheduler).save_pretrained(folder)
    return str(folder)


def test_evaluate_reports_bits_per_dim_of_the_digits_at_their_17_levels(tmp_path):
    import json

    pipe = _digits_pipeline(tmp_path / "pipe")
    module = _evaluate_module()
    common = ["--pipeline", pipe, "--dataset", "digits", "--no_fid", "--bpd_samples", "4", "--bpd_rtol", "1e-3"]
    module.main([*common, "--out", str(tmp_path / "levels.json")])
    report = json.loads((tmp_path / "levels.json").read_text())
    assert report["num_levels"] == 17 and report["bits_per_dim"] > 0 and "nats_per_dim" not in report
    module.main([*common, "--num_levels", "0", "--out", str(tmp_path / "continuous.json")])
    report = json.loads((tmp_path / "continuous.json").read_text())
    assert report["num_levels"] is None and "bits_per_dim" not in report and "continuous" in report["likelihood_note"]


def test_evaluate_refuses_levels_the_data_is_not_on(tmp_path):
    pipe = _digits_pipeline(tmp_path / "pipe")
    with pytest.raises(ValueError, match="does not lie on 256 levels.*--num_levels 0"):
        _evaluate_module().main(["--pipeline", pipe, "--dataset", "digits", "--no_fid", "--bpd_samples", "4", "--num_levels", "256", "--out", str(tmp_path / "r.json")])


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="fp16 is honoured on CUDA")
def test_train_script_reports_a_refused_run_in_one_line(tmp_path):
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, str(EXAMPLES / "train.py"), "--output_dir", str(tmp_path / "run"), "--mixed_precision", "fp16", "--report_to", "none"],
        capture_output=True, text=True, timeout=120, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("error: --mixed_precision fp16 needs a CUDA GPU")


@pytest.mark.parametrize("shape", [(64, 1, 8, 8), (64, 3, 32, 32), (5, 1, 8, 8), (4, 3, 256, 256)], ids=str)
def test_sample_grids_are_readable(shape, tmp_path):
    """Small images are enlarged (whole factors, nearest neighbour) to a grid at least 512 pixels wide: 64 8x8
    digits were a 274-pixel grid; large ones are left as they are. Greyscale stays one channel."""
    import numpy as np
    import PIL.Image
    import torch

    from scoresde_diffusers.training.plotting import save_samples_figure

    samples = torch.linspace(-1, 1, int(np.prod(shape))).reshape(shape)
    path = save_samples_figure(samples, str(tmp_path / "grid.png"))
    grid = PIL.Image.open(path)
    assert grid.size[0] >= 512 and grid.mode == ("L" if shape[1] == 1 else "RGB")
    if shape == (64, 1, 8, 8):
        assert grid.size == (528, 528)  # 8 x (8 px x 8 + 2 px gap)
        tile = np.asarray(grid)[1:65, 1:65]  # the first sample, each pixel an 8x8 block
        assert (tile == np.kron(tile[::8, ::8], np.ones((8, 8), dtype=np.uint8))).all()
    if shape[-1] == 256:
        assert grid.size == (2 * 258, 2 * 258)
