"""The training loop in-process: accuracy on a 2-D mixture, exact resume, atomic checkpoints, bad input, the Hub."""

import json
import os

import pytest
import torch

from scoresde_diffusers import GaussianMixtureScoreModel
from scoresde_diffusers.training import CheckpointError, TrainingConfig, latest_checkpoint, list_checkpoints, parse_args, train
from scoresde_diffusers.training import hub as hub_module


def tiny(output_dir, **overrides):
    """A few-second run on the 2-D mixture."""
    base = dict(
        output_dir=str(output_dir),
        dataset="four_gaussians",
        num_samples=2048,
        train_batch_size=128,
        max_train_steps=8,
        mlp_hidden_dim=32,
        mlp_layers=2,
        checkpointing_steps=4,
        sample_every=0,
        num_sample_images=16,
        num_inference_steps=10,
        report_to="none",
        progress_bar=False,
        log_every=1000,
    )
    base.update(overrides)
    return TrainingConfig(**base)


def test_mlp_learns_the_mixture_mode_weights(tmp_path):
    """Short DSM run on the four-Gaussian mixture (weights 0.1, 0.2, 0.3, 0.4): the loss falls and PC samples of
    the EMA model land in each mode with its weight, within 0.04 (2000 samples: binomial sd <= 0.011), and are
    as likely under the true density as data (mean log p within 0.5 nats)."""
    from scoresde_diffusers.pipelines.score_sde_pc import ScoreSdePCPipeline

    result = train(
        tiny(tmp_path / "gmm", num_samples=None, train_batch_size=256, max_train_steps=600, mlp_hidden_dim=128, mlp_layers=3,
             learning_rate=2e-3, lr_warmup_steps=50, ema_decay=0.99, checkpointing_steps=10**6, num_sample_images=16)
    )
    losses = [l for _, l in result.loss_history]
    assert sum(losses[-50:]) / 50 < 0.6 * sum(losses[:50]) / 50
    pipe = ScoreSdePCPipeline.from_pretrained(str(tmp_path / "gmm"))
    assert type(pipe.unet).__name__ == "MLPScoreModel"
    pipe.set_progress_bar_config(disable=True)
    samples = pipe(batch_size=2000, num_inference_steps=200, generator=torch.Generator().manual_seed(0), output_type="pt").images
    truth = GaussianMixtureScoreModel.four_gaussians()
    posteriors = truth.component_posteriors(samples)
    fractions = torch.bincount(posteriors.argmax(1), minlength=4).float() / len(samples)
    torch.testing.assert_close(fractions, torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.04, rtol=0)
    data_logp = truth.log_prob(truth.sample_data(2000, generator=torch.Generator().manual_seed(1))).mean()
    assert abs(float(truth.log_prob(samples).mean() - data_logp)) < 0.5


def test_resume_gives_the_same_run(tmp_path):
    """8 steps straight == 4 steps, stop, resume from checkpoint-4, 4 more: same weights, EMA, loss history."""
    straight = train(tiny(tmp_path / "a", max_train_steps=8))
    train(tiny(tmp_path / "b", max_train_steps=4))
    assert latest_checkpoint(str(tmp_path / "b")).endswith("checkpoint-4")
    resumed = train(tiny(tmp_path / "b", max_train_steps=8, resume_from_checkpoint="latest"))
    assert resumed.resumed_from.endswith("checkpoint-4") and resumed.global_step == 8
    assert [s for s, _ in resumed.loss_history] == list(range(1, 9))
    torch.testing.assert_close(torch.tensor(resumed.loss_history), torch.tensor(straight.loss_history))
    from safetensors.torch import load_file

    for part in ("unet/diffusion_pytorch_model.safetensors", "checkpoint-8/model.safetensors"):
        a, b = load_file(str(tmp_path / "a" / part)), load_file(str(tmp_path / "b" / part))
        for key in a:
            torch.testing.assert_close(a[key], b[key], msg=f"{part}: {key}")


def test_checkpoint_limit_and_leftover_tmp(tmp_path):
    out = tmp_path / "run"
    os.makedirs(out / ".tmp-checkpoint-99")  # what a kill during a save leaves behind
    train(tiny(out, max_train_steps=10, checkpointing_steps=2, checkpoints_total_limit=2))
    assert [os.path.basename(p) for p in list_checkpoints(str(out))] == ["checkpoint-8", "checkpoint-10"]
    assert not any(name.startswith(".tmp-") for name in os.listdir(out))
    state = json.loads((out / "checkpoint-10" / "training_state.json").read_text())
    assert state["step"] == 10 and len(state["loss_history"]) == 10
    for name in ("model_index.json", "samples.png", "loss.png", "loss_history.csv", "README.md", "unet/config.json"):
        assert (out / name).exists(), name


def test_corrupt_or_missing_checkpoint_is_a_clear_error(tmp_path):
    out = tmp_path / "run"
    train(tiny(out, max_train_steps=8, checkpointing_steps=4))
    with pytest.raises(CheckpointError, match="'checkpoint-3' does not exist.*checkpoint-4.*checkpoint-8"):
        train(tiny(out, max_train_steps=12, resume_from_checkpoint="checkpoint-3"))
    # damage the latest one: truncated weights
    weights = out / "checkpoint-8" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    before = sorted(os.listdir(out))
    with pytest.raises(CheckpointError, match="checkpoint-8' is corrupt.*checkpoint-4"):
        train(tiny(out, max_train_steps=12, resume_from_checkpoint="latest"))
    assert sorted(os.listdir(out)) == before and (out / "checkpoint-4" / "model.safetensors").exists()
    (out / "checkpoint-4" / "training_state.json").unlink()
    with pytest.raises(CheckpointError, match="incomplete or corrupt"):
        train(tiny(out, max_train_steps=12, resume_from_checkpoint=str(out / "checkpoint-4")))


TINY_DIGITS = dict(dataset="digits", width=8, channel_mult=[1, 2], train_batch_size=16, num_samples=64, num_sample_images=4, num_inference_steps=3)


def test_checkpoints_hold_only_safetensors_and_json(tmp_path):
    """Every file of every checkpoint is safetensors or JSON (no pickle to run on resume), and its EMA is a model
    folder that `UNet2DModel.from_pretrained` loads, holding the weights the final pipeline was saved with."""
    from diffusers import UNet2DModel
    from safetensors.torch import load_file

    out = tmp_path / "run"
    train(tiny(out, max_train_steps=4, checkpointing_steps=2, **TINY_DIGITS))
    for checkpoint in list_checkpoints(str(out)):
        files = [os.path.join(root, name) for root, _, names in os.walk(checkpoint) for name in names]
        assert files and all(f.endswith((".safetensors", ".json")) for f in files), files
    ema = UNet2DModel.from_pretrained(str(out / "checkpoint-4" / "unet_ema"))
    final = load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))
    for key, value in ema.state_dict().items():
        torch.testing.assert_close(value, final[key], msg=key)


def test_the_saved_pipeline_knows_the_data_levels(tmp_path):
    # the digits' 17 grey levels go into model_index.json, where the ODE scheduler's grid end is derived from them
    out = tmp_path / "run"
    train(tiny(out, max_train_steps=1, **TINY_DIGITS))
    index = json.loads((out / "model_index.json").read_text())
    assert index["num_levels"] == 17 and index["data_range"] == [-1.0, 1.0]


class _Payload:
    """Unpickling this creates `marker`: proof that a pickle was loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_with_a_pickle_is_refused_without_unpickling(tmp_path):
    import pickle

    out = tmp_path / "run"
    train(tiny(out, max_train_steps=4, checkpointing_steps=4))
    marker = tmp_path / "payload-ran"
    (out / "checkpoint-4" / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(CheckpointError, match=r"holds pickled state \(custom_checkpoint_0.pkl\).*start a new run"):
        train(tiny(out, max_train_steps=8, resume_from_checkpoint="latest"))
    assert not marker.exists()


def test_state_files_round_trip_an_optimizer_state(tmp_path):
    """`save_state_files` / `load_state_files` give back an AdamW state dict (int keys, tuples, tensors) exactly."""
    from scoresde_diffusers.training.checkpointing import load_state_files, save_state_files

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.99))
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    save_state_files(str(tmp_path), "optimizer", optimizer.state_dict())
    restored = load_state_files(str(tmp_path), "optimizer")
    assert restored["param_groups"] == optimizer.state_dict()["param_groups"]
    assert set(restored["state"]) == {0, 1}
    for index, values in optimizer.state_dict()["state"].items():
        for key, value in values.items():
            torch.testing.assert_close(restored["state"][index][key], value)
    fresh = torch.optim.AdamW(model.parameters(), lr=1.0)
    fresh.load_state_dict(restored)
    assert fresh.param_groups[0]["betas"] == (0.8, 0.99)


def test_bad_configuration_errors(tmp_path):
    with pytest.raises(ValueError, match="Unknown loss 'l3'"):
        train(tiny(tmp_path / "a", loss="l3"))
    with pytest.raises(ValueError, match="Unknown dataset 'nowhere-xyz'"):
        train(tiny(tmp_path / "b", dataset="nowhere-xyz"))
    with pytest.raises(ValueError, match="use --model mlp"):
        train(tiny(tmp_path / "c", model="ddpmpp"))
    with pytest.raises(ValueError, match="Resolution 10 cannot be halved"):
        train(tiny(tmp_path / "d", dataset="digits", resolution=10, channel_mult=[1, 2, 2]))
    with pytest.raises(ValueError, match="Unknown SDE 'vx'"):
        train(tiny(tmp_path / "e", sde="vx"))
    with pytest.raises(SystemExit):
        parse_args(["--mixed_precision", "fp8"])


def _fail_at_update(monkeypatch, step):
    """The training step raises at update `step` (after set-up wrote the folder), as bad data or a crash would."""
    from scoresde_diffusers.training import trainer

    real_step = trainer.training_step

    def failing_step(run, batch):
        if run.global_step + 1 == step:
            raise RuntimeError("a batch the model cannot take")
        return real_step(run, batch)

    monkeypatch.setattr(trainer, "training_step", failing_step)


def test_a_failed_run_leaves_nothing_behind(tmp_path, monkeypatch):
    """A run that fails before its first checkpoint removes the folder it created, empties (but keeps) an empty
    folder it was given, and leaves a folder holding other files as it was; after a checkpoint everything stays,
    to resume from."""
    _fail_at_update(monkeypatch, 1)
    with pytest.raises(RuntimeError, match="cannot take"):
        train(tiny(tmp_path / "new", report_to="tensorboard"))
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match="cannot take"):
        train(tiny(tmp_path / "empty"))
    assert (tmp_path / "empty").is_dir() and not os.listdir(tmp_path / "empty")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError, match="cannot take"):
        train(tiny(tmp_path / "full", overwrite_output_dir=True))
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"
    monkeypatch.undo()
    _fail_at_update(monkeypatch, 6)
    with pytest.raises(RuntimeError, match="cannot take"):
        train(tiny(tmp_path / "late"))
    assert list_checkpoints(str(tmp_path / "late")) == [str(tmp_path / "late" / "checkpoint-4")]
    monkeypatch.undo()
    assert train(tiny(tmp_path / "late", resume_from_checkpoint="latest")).global_step == 8


def test_push_to_hub_against_a_local_stand_in(tmp_path, monkeypatch):
    calls = {}

    class Repo:
        repo_id = "someone/digits-vp"

    def fake_create_repo(repo_id, exist_ok, token, private):
        calls["create_repo"] = dict(repo_id=repo_id, exist_ok=exist_ok, token=token, private=private)
        return Repo()

    def fake_upload_folder(repo_id, folder_path, commit_message, ignore_patterns, token):
        calls["upload_folder"] = dict(repo_id=repo_id, folder_path=folder_path, ignore_patterns=ignore_patterns, files=sorted(os.listdir(folder_path)))
        calls["card"] = open(os.path.join(folder_path, "README.md"), encoding="utf-8").read()

    monkeypatch.setattr(hub_module, "create_repo", fake_create_repo)
    monkeypatch.setattr(hub_module, "upload_folder", fake_upload_folder)
    out = tmp_path / "digits-vp"
    train(tiny(out, max_train_steps=2, **TINY_DIGITS, push_to_hub=True, hub_model_id="digits-vp", hub_private=True))
    assert calls["create_repo"] == dict(repo_id="digits-vp", exist_ok=True, token=None, private=True)
    upload = calls["upload_folder"]
    assert upload["repo_id"] == "someone/digits-vp" and upload["folder_path"] == str(out)
    assert "checkpoint-*" in upload["ignore_patterns"]
    assert {"model_index.json", "unet", "scheduler", "README.md", "samples.png"} <= set(upload["files"])
    card = calls["card"]
    assert "license: apache-2.0" in card and "library_name: diffusers" in card
    assert "dataset:digits" in card and "vp-sde" in card
    assert "`digits`" in card and "beta_min=0.1" in card and "![samples](samples.png)" in card and "UNet2DModel" in card
    assert '"max_train_steps": 2' in card and 'ScoreSdePCPipeline.from_pretrained("someone/digits-vp")' in card
    assert 'DiffusionPipeline.from_pretrained("someone/digits-vp", trust_remote_code=True)' in card


def test_bf16_and_gradient_accumulation(tmp_path):
    """Mixed precision (bf16 autocast, also on CPU) and 2 micro-batches per update: steps count updates."""
    result = train(tiny(tmp_path / "mp", mixed_precision="bf16", gradient_accumulation_steps=2, max_train_steps=3, checkpointing_steps=3))
    assert result.global_step == 3 and len(result.loss_history) == 3
    assert all(torch.isfinite(torch.tensor(l)) for _, l in result.loss_history)


@pytest.mark.parametrize(
    "sde,loss,extra",
    [
        ("ve", "smld", {"sigma_max": 5.0}),
        ("subvp", "likelihood", {"beta_max": 10.0}),
        ("vp", "ddpm", {}),
    ],
)
def test_other_sdes_and_losses_train(tmp_path, sde, loss, extra):
    """VE (Fourier MLP called with sigma, score via epsilon), sub-VP and VP with the other losses: a few steps
    run, and the saved scheduler carries the SDE's parameters."""
    from scoresde_diffusers.pipelines.score_sde_pc import ScoreSdePCPipeline

    result = train(tiny(tmp_path / sde, sde=sde, loss=loss, max_train_steps=3, checkpointing_steps=3, **extra))
    assert result.global_step == 3
    pipe = ScoreSdePCPipeline.from_pretrained(str(tmp_path / sde))
    for key, value in extra.items():
        assert pipe.scheduler.config[key] == value
    if sde == "ve":
        assert pipe.unet.config.time_embedding_type == "fourier" and pipe.scheduler.config.timestep_type == "sigma"
    with pytest.raises(ValueError, match="does not apply"):
        train(tiny(tmp_path / "x", sde=sde, **({"beta_max": 3.0} if sde == "ve" else {"sigma_max": 3.0})))


def test_default_configuration_is_the_documented_main_job():
    """No arguments: VP SDE, DSM loss, a small DDPM++ UNet (epsilon) on the 8x8 digits, EMA on."""
    from scoresde_diffusers.data import load_training_data
    from scoresde_diffusers.training import build_model_and_scheduler

    config = parse_args([])
    assert (config.dataset, config.sde, config.loss, config.model, config.output_dir) == ("digits", "vp", "dsm", "auto", "outputs/digits-vp")
    assert config.use_ema and config.max_train_steps == 1600 and config.train_batch_size == 128
    model, scheduler = build_model_and_scheduler(config, load_training_data(config.dataset))
    assert type(model).__name__ == "UNet2DModel" and model.config.time_embedding_type == "positional"
    assert (model.config.in_channels, model.config.sample_size) == (1, 8)
    assert type(scheduler).__name__ == "VPSDEScheduler" and scheduler.config.prediction_type == "epsilon"
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 1e6


def test_state_files_round_trip_rng_states(tmp_path):
    """Python, NumPy and torch RNG states (tuples, uint32 arrays, byte tensors) come back exactly: the same draws."""
    import random

    import numpy as np

    from scoresde_diffusers.training.checkpointing import load_state_files, save_state_files

    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(), "a.b": torch.ones(1), "a": {"b": torch.zeros(1)}}
    save_state_files(str(tmp_path), "rng", states)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    restored = load_state_files(str(tmp_path), "rng")
    random.setstate(restored["python"])
    np.random.set_state(restored["numpy"])
    torch.set_rng_state(restored["torch"])
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(1), expected[2])
    assert torch.equal(restored["a.b"], torch.ones(1)) and torch.equal(restored["a"]["b"], torch.zeros(1))
