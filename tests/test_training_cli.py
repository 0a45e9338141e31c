"""The command line end to end in subprocesses: `python examples/train.py`, a SIGKILL and a resume, and a
2-process `accelerate launch --cpu` run whose result loads as a pipeline."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from scoresde_diffusers.training import list_checkpoints, train
from scoresde_diffusers.training.checkpointing import STATE_FILE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "examples", "train.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
TINY_DIGITS = [
    "--dataset", "digits", "--num_samples", "256", "--train_batch_size", "16", "--width", "8", "--channel_mult", "1", "2",
    "--num_sample_images", "4", "--num_inference_steps", "3", "--report_to", "none", "--no-progress_bar",
]
TINY_TOY = [
    "--dataset", "four_gaussians", "--num_samples", "2048", "--train_batch_size", "64", "--mlp_hidden_dim", "32",
    "--mlp_layers", "2", "--sample_every", "0", "--num_sample_images", "16", "--num_inference_steps", "5",
    "--report_to", "none", "--no-progress_bar", "--log_every", "100000",
]


def _state(path):
    with open(os.path.join(path, STATE_FILE), encoding="utf-8") as f:
        return json.load(f)


def test_python_examples_train_digits_end_to_end(tmp_path):
    """The no-argument job's code path (digits, VP, DDPM++ UNet, DSM, EMA, PC grid, loss plot), tiny."""
    from scoresde_diffusers.pipelines.score_sde_pc import ScoreSdePCPipeline

    out = tmp_path / "digits"
    subprocess.run([sys.executable, SCRIPT, "--output_dir", str(out), "--max_train_steps", "4", "--checkpointing_steps", "2",
                    "--sample_every", "2", *TINY_DIGITS, "--report_to", "tensorboard"], check=True, env=ENV, cwd=ROOT, timeout=300)
    for name in ("samples.png", "loss.png", "samples/step-0000002.png", "README.md", "checkpoint-4", "logs"):
        assert (out / name).exists(), name
    pipe = ScoreSdePCPipeline.from_pretrained(str(out))
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, num_inference_steps=3, output_type="np").images
    assert images.shape == (2, 8, 8, 1)
    assert pipe.scheduler.config.prediction_type == "epsilon" and type(pipe.scheduler).__name__ == "VPSDEScheduler"


def test_sigkill_then_resume_continues_the_run(tmp_path):
    """Kill a run with SIGKILL right after it wrote a checkpoint (possibly in the middle of the next save): the
    latest checkpoint is complete, `--resume_from_checkpoint latest` resumes at its step with its history, and
    ends with the weights and EMA of an uninterrupted run (a schedule that does not depend on the step budget)."""
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, SCRIPT, "--output_dir", str(out), "--max_train_steps", "100000",
                             "--checkpointing_steps", "3", "--checkpoints_total_limit", "2", "--lr_scheduler", "constant_with_warmup", *TINY_TOY],
                            env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            checkpoints = list_checkpoints(str(out))
            if checkpoints and int(checkpoints[-1].rsplit("-", 1)[1]) >= 9:
                break
            assert proc.poll() is None, "the training run ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no checkpoint appeared in time")
        time.sleep(0.3)  # let it get into the next steps, maybe into a save
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    latest = list_checkpoints(str(out))[-1]
    state = _state(latest)
    step = state["step"]
    assert latest.endswith(f"checkpoint-{step}") and [s for s, _ in state["loss_history"]] == list(range(1, step + 1))
    toy = dict(
        dataset="four_gaussians", num_samples=2048, train_batch_size=64, mlp_hidden_dim=32, mlp_layers=2, sample_every=0,
        num_sample_images=16, num_inference_steps=5, report_to="none", progress_bar=False, max_train_steps=step + 3,
        checkpointing_steps=3, lr_scheduler="constant_with_warmup",
    )
    resumed = train(output_dir=str(out), resume_from_checkpoint="latest", **toy)
    assert resumed.resumed_from == latest
    history = resumed.loss_history
    assert [s for s, _ in history] == list(range(1, step + 4))
    assert history[:step] == state["loss_history"]  # the curve continues from where it was cut
    final = _state(str(out / f"checkpoint-{step + 3}"))
    assert final["step"] == step + 3
    straight = train(output_dir=str(tmp_path / "straight"), **toy)
    assert straight.loss_history == history
    from safetensors.torch import load_file

    for part in ("model.safetensors", "unet_ema/diffusion_pytorch_model.safetensors"):
        a, b = load_file(str(out / f"checkpoint-{step + 3}" / part)), load_file(str(tmp_path / "straight" / f"checkpoint-{step + 3}" / part))
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{part}: {key}")


def test_two_process_launch(tmp_path):
    """Two CPU processes: `accelerate launch --multi_gpu --num_processes 2 ... --cpu` (torchrun + gloo; accelerate's own
    `--cpu` launcher starts one process only, unless MPI is set up). Sharded data, one writer, a loadable pipeline."""
    from scoresde_diffusers.pipelines.score_sde_pc import ScoreSdePCPipeline

    out = tmp_path / "ddp"
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    command = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--main_process_port", "29517", SCRIPT, "--output_dir", str(out),
               "--max_train_steps", "4", "--checkpointing_steps", "2", "--sample_every", "0", *TINY_DIGITS, "--cpu"]
    subprocess.run(command, check=True, env=ENV, cwd=ROOT, timeout=300)
    state = _state(str(out / "checkpoint-4"))
    assert state["num_processes"] == 2
    assert state["batches_per_epoch_per_process"] == 256 // 16 // 2  # each process sees half of the data
    assert sorted(f for f in os.listdir(out / "checkpoint-4") if f.startswith("random_states_") and f.endswith(".json")) == ["random_states_0.json", "random_states_1.json"]
    assert not [f for f in os.listdir(out / "checkpoint-4") if f.endswith(".pkl")]
    assert [s for s, _ in state["loss_history"]] == [1, 2, 3, 4]
    pipe = ScoreSdePCPipeline.from_pretrained(str(out))
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert images.shape == (2, 1, 8, 8) and torch.isfinite(images).all()
