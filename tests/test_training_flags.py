"""The training command line speaks diffusers' `train_unconditional.py` flag names, leaves the precision to the
accelerate config, and refuses what it cannot honour."""

import json
import os
import sys

import numpy as np
import PIL.Image
import pytest
import torch

from scoresde_diffusers.training import TrainingConfig, parse_args, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = dict(
    dataset="four_gaussians", num_samples=512, train_batch_size=64, mlp_hidden_dim=16, mlp_layers=1, max_train_steps=2,
    checkpointing_steps=2, sample_every=0, num_sample_images=8, num_inference_steps=3, report_to="none", progress_bar=False,
)  # fmt: skip


@pytest.mark.parametrize(
    "argv, field, expected",
    [
        (["--dataset_name", "two_moons"], "dataset", "two_moons"),
        (["--logger", "wandb"], "report_to", "wandb"),
        (["--num_epochs", "3"], "num_epochs", 3),
        (["--save_images_epochs", "2"], "save_images_epochs", 2),
        (["--ema_max_decay", "0.99"], "ema_decay", 0.99),
        (["--eval_batch_size", "8"], "num_sample_images", 8),
        (["--ddpm_num_steps", "500"], "num_train_timesteps", 500),
        (["--ddpm_num_inference_steps", "50"], "num_inference_steps", 50),
        (["--model_config_name_or_path", "unet/config.json"], "model_config", "unet/config.json"),
        (["--hub_private_repo"], "hub_private", True),
        (["--resolution=16"], "resolution", 16),
        (["--center_crop"], "center_crop", True),
        (["--random_flip"], "random_flip", True),
        (["--use_ema"], "use_ema", True),
        (["--lr_warmup_steps", "500"], "lr_warmup_steps", 500),
        (["--learning_rate", "1e-4"], "learning_rate", 1e-4),
        (["--adam_weight_decay", "1e-6"], "adam_weight_decay", 1e-6),
        (["--checkpoints_total_limit", "5"], "checkpoints_total_limit", 5),
        (["--save_model_epochs", "5"], "save_model_epochs", 5),
        (["--output_dir", "runs/x"], "output_dir", "runs/x"),
        (["--seed", "7"], "seed", 7),
        (["--cache_dir", "cache"], "cache_dir", "cache"),
        (["--train_batch_size", "16"], "train_batch_size", 16),
        (["--dataloader_num_workers", "2"], "dataloader_num_workers", 2),
        (["--gradient_accumulation_steps", "2"], "gradient_accumulation_steps", 2),
        (["--lr_scheduler", "linear"], "lr_scheduler", "linear"),
        (["--adam_beta1", "0.95"], "adam_beta1", 0.95),
        (["--adam_beta2", "0.99"], "adam_beta2", 0.99),
        (["--adam_epsilon", "1e-7"], "adam_epsilon", 1e-7),
        (["--push_to_hub"], "push_to_hub", True),
        (["--hub_token", "hf_x"], "hub_token", "hf_x"),
        (["--hub_model_id", "me/model"], "hub_model_id", "me/model"),
        (["--logging_dir", "tb"], "logging_dir", "tb"),
        (["--mixed_precision", "bf16"], "mixed_precision", "bf16"),
        (["--prediction_type", "sample"], "prediction_type", "sample"),
        (["--checkpointing_steps", "100"], "checkpointing_steps", 100),
        (["--resume_from_checkpoint", "latest"], "resume_from_checkpoint", "latest"),
        (["--dataset_config_name", "plain_text"], "dataset_config_name", "plain_text"),
        (["--overwrite_output_dir"], "overwrite_output_dir", True),
        (["--ddpm_beta_schedule", "linear"], "ddpm_beta_schedule", "linear"),
        (["--enable_xformers_memory_efficient_attention"], "enable_xformers_memory_efficient_attention", True),
        (["--local_rank", "1"], "local_rank", 1),
        (["--ema_power", "0.5"], "ema_warmup", True),  # diffusers' EMA always warms up with these two
        (["--ema_inv_gamma", "2"], "ema_warmup", True),
    ],
    ids=lambda v: v[0] if isinstance(v, list) else None,
)
def test_diffusers_flag_names_set_our_options(argv, field, expected):
    assert getattr(parse_args(argv), field) == expected


#: Every option of diffusers' examples/unconditional_image_generation/train_unconditional.py.
TRAIN_UNCONDITIONAL_FLAGS = """
    --dataset_name --dataset_config_name --model_config_name_or_path --train_data_dir --output_dir --overwrite_output_dir
    --cache_dir --resolution --center_crop --random_flip --train_batch_size --eval_batch_size --dataloader_num_workers
    --num_epochs --save_images_epochs --save_model_epochs --gradient_accumulation_steps --learning_rate --lr_scheduler
    --lr_warmup_steps --adam_beta1 --adam_beta2 --adam_weight_decay --adam_epsilon --use_ema --ema_inv_gamma --ema_power
    --ema_max_decay --push_to_hub --hub_token --hub_model_id --hub_private_repo --logger --logging_dir --local_rank
    --mixed_precision --prediction_type --ddpm_num_steps --ddpm_num_inference_steps --ddpm_beta_schedule
    --checkpointing_steps --checkpoints_total_limit --resume_from_checkpoint --enable_xformers_memory_efficient_attention
    --seed
""".split()


def test_every_train_unconditional_flag_is_ours_and_in_the_docs():
    from scoresde_diffusers.training import build_parser

    ours = {flag for action in build_parser()._actions for flag in action.option_strings}
    assert not [flag for flag in TRAIN_UNCONDITIONAL_FLAGS if flag not in ours]
    table = open(os.path.join(ROOT, "docs", "training.md"), encoding="utf-8").read().split("| diffusers flag | ours |", 1)[1].split("\n\n", 1)[0]
    assert not [flag for flag in TRAIN_UNCONDITIONAL_FLAGS if f"`{flag}" not in table]


def test_ema_warmup_given_with_its_shape_is_kept():
    assert parse_args(["--ema_power", "0.5", "--no-ema_warmup"]).ema_warmup is False
    assert parse_args([]).ema_warmup is False


def test_local_rank_is_accepted_and_ignored():
    """accelerate (and torch.distributed.launch) pass it; the rank comes from the environment."""
    assert parse_args(["--local_rank=0"]).local_rank == 0
    assert parse_args(["--local_rank", "3"]).to_dict() == {**parse_args([]).to_dict(), "local_rank": 3}


def test_ddpm_beta_schedule_linear_is_the_vp_sde_and_others_are_refused(capsys):
    assert parse_args(["--ddpm_beta_schedule", "linear", "--sde", "subvp"]).sde == "subvp"
    with pytest.raises(SystemExit):
        parse_args(["--ddpm_beta_schedule", "squaredcos_cap_v2"])
    error = capsys.readouterr().err
    assert "--ddpm_beta_schedule 'squaredcos_cap_v2' is not supported" in error and "allowed: linear" in error
    with pytest.raises(ValueError, match="the 've' SDE has no beta schedule"):
        TrainingConfig(ddpm_beta_schedule="linear", sde="ve")


def test_dataset_config_name_is_load_datasets_config_name(monkeypatch, tmp_path):
    import datasets

    from scoresde_diffusers.data import load_training_data

    calls = []
    images = [PIL.Image.fromarray(np.full((8, 8), 10 * i, dtype=np.uint8)) for i in range(4)]
    fake = datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: calls.append((args, kwargs)) or fake)
    data = load_training_data("someone/images", resolution=8, config_name="small", cache_dir=str(tmp_path))
    assert len(data.dataset) == 4 and calls == [(("someone/images", "small"), {"split": "train", "cache_dir": str(tmp_path)})]
    assert parse_args(["--dataset_name", "someone/images", "--dataset_config_name", "small"]).dataset_config_name == "small"
    with pytest.raises(ValueError, match="--dataset_config_name 'small'.*'digits' is a built-in"):
        load_training_data("digits", config_name="small")
    with pytest.raises(ValueError, match="is a local folder, which has none"):
        load_training_data(str(tmp_path), config_name="small")


def test_xformers_attention_is_switched_on_or_refused_with_the_reason(monkeypatch, tmp_path):
    import diffusers.utils

    from scoresde_diffusers.training import trainer

    if not diffusers.utils.is_xformers_available():
        with pytest.raises(ValueError, match="--enable_xformers_memory_efficient_attention needs xformers, which is not installed"):
            train(TrainingConfig(output_dir=str(tmp_path / "run"), enable_xformers_memory_efficient_attention=True, **TOY))
        assert not (tmp_path / "run").exists()
    monkeypatch.setattr(diffusers.utils, "is_xformers_available", lambda: True)
    switched = []

    class Model(torch.nn.Module):
        def enable_xformers_memory_efficient_attention(self):
            switched.append(True)

    trainer.enable_xformers_attention(Model())
    assert switched == [True]
    with pytest.raises(ValueError, match="the Linear model has no xformers attention"):
        trainer.enable_xformers_attention(torch.nn.Linear(2, 2))


def test_a_folder_of_other_files_needs_overwrite_output_dir_and_a_run_of_ours_resumes(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"not ours")
    with pytest.raises(ValueError, match="not empty \\(holiday.jpg\\) and is not a training run.*--overwrite_output_dir"):
        train(TrainingConfig(output_dir=str(folder), **TOY))
    assert os.listdir(folder) == ["holiday.jpg"]
    train(TrainingConfig(output_dir=str(folder), overwrite_output_dir=True, **TOY))
    assert (folder / "holiday.jpg").read_bytes() == b"not ours" and (folder / "checkpoint-2").is_dir()
    # now a run of ours: continued and resumed without the flag
    result = train(TrainingConfig(output_dir=str(folder), **{**TOY, "max_train_steps": 4, "resume_from_checkpoint": "latest"}))
    assert (result.resumed_from, result.global_step) == (str(folder / "checkpoint-2"), 4)


def _image_folder(path, count=8, size=8):
    os.makedirs(path)
    rng = np.random.default_rng(0)
    for i in range(count):
        PIL.Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(os.path.join(path, f"{i}.png"))
    return str(path)


def test_a_train_unconditional_command_line_runs_our_trainer(tmp_path, monkeypatch, caplog):
    """diffusers' flags only (plus a tiny model): an imagefolder, epochs, grids every epoch logged to TensorBoard,
    the pipeline written every epoch."""
    import logging

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sys.path.insert(0, os.path.join(ROOT, "examples"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import train as train_script

    folder = _image_folder(tmp_path / "images")
    out = tmp_path / "run"
    caplog.set_level(logging.INFO)
    result = train_script.main([
        "--dataset_name", "imagefolder", "--train_data_dir", folder, "--cache_dir", str(tmp_path / "cache"),
        "--output_dir", str(out), "--resolution", "8", "--center_crop", "--random_flip", "--train_batch_size", "4",
        "--num_epochs", "2", "--save_images_epochs", "1", "--save_model_epochs", "1", "--checkpointing_steps", "2", "--use_ema", "--ema_max_decay", "0.99",
        "--learning_rate", "1e-4", "--lr_warmup_steps", "1", "--logger", "tensorboard", "--eval_batch_size", "4",
        "--ddpm_num_inference_steps", "3", "--mixed_precision", "no",
        "--width", "8", "--channel_mult", "1", "2", "--no-progress_bar",
    ])  # fmt: skip
    assert result.global_step == 4  # 2 epochs of 8 images / batch 4
    recorded = json.loads((out / "training_config.json").read_text())
    assert (recorded["dataset"], recorded["max_train_steps"], recorded["sample_every"], recorded["save_pipeline_every"]) == (folder, 4, 2, 2)
    assert f"Step 2: writing the EMA pipeline into {out} ..." in [r.getMessage() for r in caplog.records]
    assert (out / "samples" / "step-0000002.png").exists() and (out / "checkpoint-2").is_dir()
    # 4 samples of 8x8 pixels: enlarged to a readable grid
    assert PIL.Image.open(out / "samples" / "step-0000002.png").size[0] >= 512
    event_dirs = {root for root, _, names in os.walk(out / "logs") if any("tfevents" in name for name in names)}
    image_tags = [tag for d in event_dirs for tag in EventAccumulator(d, size_guidance={"images": 0}).Reload().Tags()["images"]]
    assert "samples" in image_tags


def test_precision_is_left_to_the_accelerate_config(tmp_path, monkeypatch):
    """No --mixed_precision: what `accelerate launch` passes on (its config) runs and is recorded."""
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    train(TrainingConfig(output_dir=str(tmp_path / "a"), **TOY))
    assert json.loads((tmp_path / "a" / "training_config.json").read_text())["mixed_precision"] == "bf16"
    train(TrainingConfig(output_dir=str(tmp_path / "b"), mixed_precision="no", **TOY))
    assert json.loads((tmp_path / "b" / "training_config.json").read_text())["mixed_precision"] == "no"


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is honoured on CUDA")
def test_fp16_without_cuda_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU.*bf16"):
        train(TrainingConfig(output_dir=str(tmp_path / "run"), mixed_precision="fp16", **TOY))
    assert not (tmp_path / "run").exists()


def test_a_channel_count_the_data_does_not_have_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--num_channels", "2"])
    assert "--num_channels: invalid choice: 2" in capsys.readouterr().err
    with pytest.raises(ValueError, match="'digits' has 1 channel"):
        train(TrainingConfig(output_dir=str(tmp_path / "digits"), **{**TOY, "dataset": "digits", "num_channels": 3}))
    with pytest.raises(ValueError, match="--num_channels applies to images"):
        train(TrainingConfig(output_dir=str(tmp_path / "toy"), num_channels=1, **TOY))


@pytest.mark.parametrize("decay", [1.5, 1.0, 0.0, -0.1])
def test_ema_decay_outside_zero_one_is_refused(decay, capsys):
    with pytest.raises(ValueError, match=r"ema_decay .* must lie in \(0, 1\)"):
        TrainingConfig(ema_decay=decay)
    with pytest.raises(SystemExit):
        parse_args(["--ema_max_decay", str(decay)])
    assert "must lie in (0, 1)" in capsys.readouterr().err


def test_imagefolder_needs_its_folder_and_one_data_set(tmp_path):
    with pytest.raises(ValueError, match="imagefolder needs the folder: add --train_data_dir"):
        TrainingConfig(dataset="imagefolder")
    with pytest.raises(ValueError, match="is not a folder"):
        TrainingConfig(train_data_dir=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="name two data sets"):
        TrainingConfig(dataset="two_moons", train_data_dir=str(tmp_path))
    assert TrainingConfig(train_data_dir=str(tmp_path)).dataset == str(tmp_path)


def test_dataset_name_takes_a_saved_dataset_folder(tmp_path):
    """`--dataset_name` of a `save_to_disk` folder (diffusers: "a local copy of a dataset in your filesystem")."""
    import datasets

    rng = np.random.default_rng(0)
    images = [PIL.Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)) for _ in range(8)]
    datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()})).save_to_disk(str(tmp_path / "saved"))
    config = parse_args([
        "--dataset_name", str(tmp_path / "saved"), "--output_dir", str(tmp_path / "run"), "--train_batch_size", "4", "--num_epochs", "1",
        "--width", "8", "--channel_mult", "1", "2", "--eval_batch_size", "4", "--ddpm_num_inference_steps", "2", "--logger", "none", "--no-progress_bar",
    ])  # fmt: skip
    result = train(config)
    assert result.global_step == 2
    assert json.loads((tmp_path / "run" / "unet" / "config.json").read_text())["in_channels"] == 1


def test_an_output_dir_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    with pytest.raises(ValueError, match="--output_dir .* is a file; give a folder"):
        train(TrainingConfig(output_dir=str(path), **TOY))
    assert path.read_text() == "not a folder"


def test_an_unknown_lr_scheduler_names_the_flag_and_the_choices(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--lr_scheduler", "foo"])
    error = capsys.readouterr().err
    assert "--lr_scheduler" in error and "'foo'" in error and "cosine, cosine_with_restarts" in error
