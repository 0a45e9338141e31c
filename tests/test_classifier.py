"""Tests of the time-dependent classifier models and their training (`scoresde_diffusers.training.classifier`)."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from scoresde_diffusers import VESDEScheduler, VPSDEScheduler
from scoresde_diffusers.models.classifier import GaussianMixtureClassifier, MLPClassifier, TimeDependentClassifier
from scoresde_diffusers.training.classifier import (
    ClassifierTrainingConfig,
    evaluate_classifier,
    load_labelled_data,
    parse_classifier_args,
    train_classifier,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "model, sample, timestep",
    [
        (TimeDependentClassifier(), torch.randn(3, 1, 8, 8), torch.tensor([0.0, 500.0, 999.0])),
        (TimeDependentClassifier(sample_size=16, in_channels=3, num_classes=4, block_out_channels=(16, 32, 32), time_embedding_type="fourier"), torch.randn(2, 3, 16, 16), torch.tensor(0.5)),
        (MLPClassifier(dim=2, num_classes=4), torch.randn(5, 2), 10),
    ],
    ids=["digits-image", "rgb-fourier", "mlp"],
)
def test_network_classifiers_shapes_gradients_and_save_load(model, sample, timestep, tmp_path):
    logits = model(sample, timestep).logits
    assert logits.shape == (sample.shape[0], model.config.num_classes)
    assert model(sample, timestep, return_dict=False)[0].shape == logits.shape
    x = sample.clone().requires_grad_(True)
    model(x, timestep).logits.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    model.save_pretrained(tmp_path)
    assert any(f.endswith(".safetensors") for f in os.listdir(tmp_path))
    loaded = type(model).from_pretrained(tmp_path)
    torch.testing.assert_close(loaded(sample, timestep).logits, logits)


def test_network_classifier_input_errors():
    with pytest.raises(ValueError, match=r"\(B, 1, 8, 8\)"):
        TimeDependentClassifier()(torch.randn(2, 3, 8, 8), 1.0)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        MLPClassifier()(torch.randn(2, 3), 1.0)
    with pytest.raises(ValueError, match="time_embedding_type"):
        MLPClassifier(time_embedding_type="learned")
    with pytest.raises(ValueError, match="norm_num_groups"):
        TimeDependentClassifier(block_out_channels=(12, 24))


def test_gaussian_mixture_classifier_round_trip_and_labelled_samples(tmp_path):
    scheduler = VESDEScheduler(sigma_max=10.0)
    classifier = GaussianMixtureClassifier.from_mixture([1, 2, 3], [[-3.0, 0.0], [0.0, 0.0], [3.0, 0.0]], [0.3, 0.3, 0.3], [1, 0, 1], scheduler=scheduler)
    classifier.save_pretrained(tmp_path)
    loaded = GaussianMixtureClassifier.from_pretrained(tmp_path)
    assert loaded.config.component_classes == [1, 0, 1] and loaded.config.num_classes == 2
    x, y = classifier.sample_data(2000, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2000, 2) and set(y.tolist()) == {0, 1}
    torch.testing.assert_close(loaded.class_weights, torch.tensor([2 / 6, 4 / 6]))
    # Nearly clean data (t = eps, sigma = sigma_min): the exact classifier is almost always right.
    timestep = scheduler.t_to_timestep(torch.tensor(1e-5))
    accuracy = (loaded(x, timestep).logits.argmax(1) == y).double().mean()
    assert accuracy > 0.99


def test_training_config_and_command_line_errors():
    with pytest.raises(ValueError, match="Unknown labelled dataset"):
        ClassifierTrainingConfig(dataset="cifar10")
    with pytest.raises(ValueError, match="Unknown SDE"):
        ClassifierTrainingConfig(sde="edm")
    config = parse_classifier_args(["--max_train_steps", "5", "--eval_times", "0.1", "0.5", "--block_out_channels", "16", "32", "--checkpointing_steps", "5"])
    assert config.max_train_steps == 5 and config.eval_times == (0.1, 0.5) and config.block_out_channels == (16, 32) and config.checkpointing_steps == 5
    with pytest.raises(SystemExit):
        parse_classifier_args(["--dataset", "nope"])


def test_labelled_digits_match_the_training_helpers_images():
    from scoresde_diffusers.data.datasets import digits

    x, y = load_labelled_data("digits")
    assert x.shape == (1797, 1, 8, 8) and y.shape == (1797,) and int(y.max()) == 9
    assert torch.equal(x[:5], torch.stack([digits().dataset[i][0] for i in range(5)]))


def test_trained_digits_classifier_beats_chance_at_moderate_noise(tmp_path):
    # 300 Adam steps on the 8x8 digits under the VP SDE (about 20 s on one CPU thread). At t = 0.25 the VP kernel
    # has m = 0.72 and sigma = 0.69 (signal-to-noise ratio about 1): chance is ~0.11 (the largest class).
    torch.manual_seed(0)
    result = train_classifier(output_dir=str(tmp_path), max_train_steps=300, eval_times=(0.1, 0.25, 0.9), checkpointing_steps=300, progress_bar=False)
    assert result.global_step == 300 and result.chance < 0.15
    assert result.accuracy[0.1] > 0.85, result.accuracy
    assert result.accuracy[0.25] > 0.55, result.accuracy
    assert result.accuracy[0.9] < 0.4, result.accuracy  # near the prior nothing can be told apart
    report = json.loads((tmp_path / "accuracy.json").read_text())
    assert report["steps"] == 300 and (tmp_path / "checkpoint-300").is_dir()
    # The saved classifier and scheduler reload and give the same accuracy.
    loaded = TimeDependentClassifier.from_pretrained(tmp_path / "classifier")
    scheduler = VPSDEScheduler.from_pretrained(tmp_path / "scheduler")
    x, y = load_labelled_data("digits")
    accuracy = evaluate_classifier(loaded, scheduler, x[:400], y[:400], [0.1])
    assert accuracy[0.1] > 0.85
    # Resuming from the last checkpoint with a larger step budget continues from step 300.
    resumed = train_classifier(output_dir=str(tmp_path), max_train_steps=310, eval_times=(0.1,), resume_from_checkpoint="latest", progress_bar=False)
    assert resumed.global_step == 310


def test_example_script_runs(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import train_classifier as script

    result = script.main(["--dataset", "four_gaussians", "--max_train_steps", "20", "--output_dir", str(tmp_path), "--no-progress_bar", "--eval_times", "0.05"])
    assert result.global_step == 20 and (tmp_path / "classifier" / "config.json").exists()
    assert json.loads((tmp_path / "classifier" / "config.json").read_text())["_class_name"] == "MLPClassifier"
    sys.modules.pop("train_classifier", None)


def test_classifier_checkpoints_hold_only_safetensors_and_json(tmp_path):
    """The classifier's checkpoints are the pickle-free ones of the score-model trainer, and resume."""
    train_classifier(dataset="four_gaussians", output_dir=str(tmp_path), max_train_steps=20, checkpointing_steps=10, eval_times=(0.1,), progress_bar=False)
    for name in ("checkpoint-10", "checkpoint-20"):
        files = [os.path.join(root, f) for root, _, names in os.walk(tmp_path / name) for f in names]
        assert files and all(f.endswith((".safetensors", ".json")) for f in files), files
    resumed = train_classifier(dataset="four_gaussians", output_dir=str(tmp_path), max_train_steps=25, eval_times=(0.1,), resume_from_checkpoint="latest", progress_bar=False)
    assert resumed.global_step == 25


def test_a_failed_classifier_run_leaves_nothing_behind(tmp_path, monkeypatch):
    """As for the score-model trainer: a run that fails before its first checkpoint removes the folder it created
    and leaves a folder holding other files as it was; once a checkpoint is written, everything stays to resume."""
    import scoresde_diffusers.training.classifier as classifier_training

    def failing_evaluation(*args, **kwargs):
        raise RuntimeError("evaluation failed")

    monkeypatch.setattr(classifier_training, "evaluate_classifier", failing_evaluation)
    run = dict(dataset="four_gaussians", max_train_steps=4, eval_times=(0.1,), progress_bar=False)
    with pytest.raises(RuntimeError, match="evaluation failed"):
        train_classifier(output_dir=str(tmp_path / "new"), checkpointing_steps=0, **run)
    assert not (tmp_path / "new").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError, match="evaluation failed"):
        train_classifier(output_dir=str(tmp_path / "full"), checkpointing_steps=0, **run)
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"
    with pytest.raises(RuntimeError, match="evaluation failed"):
        train_classifier(output_dir=str(tmp_path / "late"), checkpointing_steps=2, **run)
    assert (tmp_path / "late" / "checkpoint-4").is_dir()
