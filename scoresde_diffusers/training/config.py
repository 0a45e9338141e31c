"""`TrainingConfig`: every option of a training run, with defaults that train the 8x8 digits on a CPU.

The command line (`examples/train.py`, `parse_args`) is generated from the dataclass fields, so an option is
declared once, with its help text, and the library API (`train(TrainingConfig(...))`) and the CLI never drift.
The defaults are the README's main job: a VP SDE, a small DDPM++ UNet, the continuous DSM loss, about 8 minutes
on 2 CPU cores.
"""

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import List, Optional, Sequence


def _opt(default, help: str, **kwargs):
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class TrainingConfig:
    """Options of `train`. See ``python examples/train.py --help`` for the same list with help texts."""

    # ------------------------------------------------------------------ output
    output_dir: str = _opt("outputs/digits-vp", "Folder of the final pipeline, checkpoints, sample grids, loss plot and logs.")
    overwrite_output_dir: bool = _opt(
        False,
        "Write into an --output_dir that already holds other files. Without it such a folder is refused, unless it "
        "is a run of ours (training_config.json or checkpoint-* folders), which is continued or resumed.",
    )
    seed: int = _opt(0, "Random seed (data order, noise, initial weights).")

    # ------------------------------------------------------------------ data
    dataset: str = _opt(
        "digits",
        "Built-in data set (digits, four_gaussians, two_moons, rings), a local image folder / save_to_disk folder, a Hub dataset name, or 'imagefolder' with --train_data_dir.",
        aliases=["--dataset_name"],
    )
    train_data_dir: Optional[str] = _opt(None, "A local image folder to train on (diffusers' flag; the same as --dataset FOLDER).")
    dataset_config_name: Optional[str] = _opt(None, "Configuration (subset) of a Hub data set, the second argument of `datasets.load_dataset` (None: its default).")
    dataset_split: str = _opt("train", "Split of a `datasets` data set.")
    image_column: Optional[str] = _opt(None, "Column of the images in a `datasets` data set (found automatically if not given).")
    resolution: Optional[int] = _opt(None, "Image height = width (None: 8 for digits, 32 otherwise).")
    num_channels: Optional[int] = _opt(None, "1 or 3 image channels, converting the images (None: that of the images).", choices=[1, 3])
    center_crop: bool = _opt(True, "Centre-crop images after resizing (--no-center_crop: random crop).")
    random_flip: bool = _opt(False, "Random horizontal flips of images.")
    num_samples: Optional[int] = _opt(None, "Size of a generated 2-D toy set, or a cap on the number of images.")
    cache_dir: Optional[str] = _opt(None, "`datasets` cache folder.")
    dataloader_num_workers: int = _opt(0, "Data loader worker processes.")

    # ------------------------------------------------------------------ SDE and loss
    sde: str = _opt("vp", "SDE: ve, vp, subvp (or a plugin's name).")
    beta_min: Optional[float] = _opt(None, "VP / sub-VP beta(0) (default 0.1).")
    beta_max: Optional[float] = _opt(None, "VP / sub-VP beta(1) (default 20).")
    sigma_min: Optional[float] = _opt(None, "VE sigma(0) (default 0.01).")
    sigma_max: Optional[float] = _opt(None, "VE sigma(1) (default 50; about the largest distance between data points).")
    num_train_timesteps: int = _opt(1000, "N of the discrete losses and of the timestep maps.", aliases=["--ddpm_num_steps"])
    ddpm_beta_schedule: Optional[str] = _opt(
        None,
        "diffusers' DDPM beta schedule: only 'linear' is the VP / sub-VP SDE (beta(t) linear from --beta_min to --beta_max); None: the SDE's own.",
    )
    prediction_type: Optional[str] = _opt(None, "What the model predicts: score, epsilon, sample, v_prediction, edm (default: the model preset's; edm for VE images).")
    timestep_type: Optional[str] = _opt(None, "How t is passed to the model: discrete, scaled, continuous, sigma (default: the preset's / the scheduler's).")
    loss: str = _opt("dsm", "Loss: dsm (lambda = sigma^2), likelihood (lambda = g^2, importance-sampled t), likelihood_uniform, smld, ddpm.")
    reduce_mean: bool = _opt(True, "Average the squared error over data dimensions (--no-reduce_mean: sum, as score_sde).")
    train_eps: float = _opt(1e-5, "Smallest training time of the continuous losses.")

    # ------------------------------------------------------------------ model
    model: str = _opt("auto", "Score model: auto (mlp for vectors, ddpmpp for images: with EDM preconditioning for VE), mlp, ncsnpp, ddpmpp.")
    model_config: Optional[str] = _opt(None, "A UNet2DModel config.json (or folder) to use instead of a preset.", aliases=["--model_config_name_or_path"])
    preset: Optional[str] = _opt(
        None,
        "A score_sde config (e.g. vp/cifar10_ddpmpp_continuous, ve/cifar10_ncsnpp_deep_continuous): the paper's exact network "
        "(NCSN++ / DDPM++ / DDPM), SDE, data range, sampler and training recipe (batch 128, lr 2e-4, 5000 warm-up steps, "
        "EMA, grad clip 1, its loss); options left at their defaults take the preset's values. See docs/checkpoints.md.",
    )
    width: int = _opt(32, "UNet channels of the first level (score_sde's nf; 128 in the paper).")
    channel_mult: Optional[List[int]] = _opt(None, "UNet width multiplier per level, e.g. 1 2 2 (by resolution if not given).", nargs="+")
    layers_per_block: int = _opt(1, "UNet residual blocks per level (4 in the paper, 8 for 'deep').")
    attention_resolutions: List[int] = _opt((16,), "Resolutions with self-attention.", nargs="*")
    dropout: float = _opt(0.0, "UNet dropout (0.1 in the paper).")
    enable_xformers_memory_efficient_attention: bool = _opt(False, "Use xformers' memory-efficient attention in the UNet (needs `pip install xformers`).")
    mlp_hidden_dim: int = _opt(128, "MLP width (2-D data).")
    mlp_layers: int = _opt(3, "MLP residual layers (2-D data).")

    # ------------------------------------------------------------------ optimisation
    train_batch_size: int = _opt(128, "Batch size per process.")
    max_train_steps: int = _opt(1600, "Number of optimiser updates (unless --num_epochs is given).")
    num_epochs: Optional[int] = _opt(None, "Train for this many passes over the data instead of --max_train_steps (diffusers' flag).")
    gradient_accumulation_steps: int = _opt(1, "Micro-batches per optimiser update.")
    learning_rate: float = _opt(2e-3, "Peak learning rate (score_sde uses 2e-4 with batch 128 on CIFAR-10).")
    lr_scheduler: str = _opt("cosine", "diffusers `get_scheduler` name: constant, constant_with_warmup, linear, cosine, ...")
    lr_warmup_steps: int = _opt(100, "Linear learning-rate warm-up steps (score_sde: 5000).")
    adam_beta1: float = _opt(0.9, "Adam beta1.")
    adam_beta2: float = _opt(0.999, "Adam beta2.")
    adam_epsilon: float = _opt(1e-8, "Adam epsilon.")
    adam_weight_decay: float = _opt(0.0, "Adam(W) weight decay.")
    max_grad_norm: float = _opt(1.0, "Gradient clipping norm (score_sde's grad_clip); <= 0 disables it.")
    cpu: bool = _opt(False, "Train on the CPU even if a GPU is present; with several processes (torchrun / `accelerate launch --multi_gpu`) this is gloo data parallelism. Set automatically for several processes on a machine without CUDA.")
    local_rank: int = _opt(-1, "Accepted for the command lines of diffusers and torch.distributed.launch, and ignored: accelerate takes each process's rank from the environment the launcher sets.")
    mixed_precision: Optional[str] = _opt(
        None,
        "no, fp16 (CUDA only) or bf16 (also on CPU); None: what `accelerate config` / `accelerate launch --mixed_precision` chose.",
        choices=["no", "fp16", "bf16"],
    )

    # ------------------------------------------------------------------ EMA
    use_ema: bool = _opt(True, "Keep an exponential moving average of the weights; the saved pipeline uses it.")
    ema_decay: float = _opt(0.999, "Largest EMA decay, in (0, 1) (score_sde: 0.9999 for VP, 0.999 for VE NCSN++).", aliases=["--ema_max_decay"])
    ema_warmup: bool = _opt(False, "diffusers' power warm-up 1 - (1 + step / inv_gamma)^-power; without it the decay is min(decay, (1 + step) / (10 + step)) as in score_sde.")
    ema_inv_gamma: float = _opt(1.0, "EMA warm-up inv_gamma (on the command line it turns on --ema_warmup, as diffusers always warms up).")
    ema_power: float = _opt(0.75, "EMA warm-up power (on the command line it turns on --ema_warmup, as diffusers always warms up).")

    # ------------------------------------------------------------------ sampling during and after training
    sample_every: int = _opt(500, "Save a sample grid every N steps (0: only at the end).")
    save_images_epochs: Optional[int] = _opt(None, "Save a sample grid every N epochs instead of every --sample_every steps (diffusers' flag).")
    num_sample_images: int = _opt(64, "Samples in a grid.", aliases=["--eval_batch_size"])
    num_inference_steps: int = _opt(200, "Steps of the saved scheduler's sampler (its predictor, and corrector if any) for the sample grids.", aliases=["--ddpm_num_inference_steps"])
    predictor: Optional[str] = _opt(None, "Predictor of the saved scheduler (default: the scheduler's).")
    corrector: Optional[str] = _opt(None, "Corrector of the saved scheduler (default: the scheduler's).")
    snr: Optional[float] = _opt(None, "Corrector signal-to-noise ratio (default: the scheduler's).")
    sampling_eps: Optional[float] = _opt(None, "Last time of the sampling grid (default: the scheduler's).")

    # ------------------------------------------------------------------ checkpoints and logging
    checkpointing_steps: int = _opt(500, "Save a checkpoint (safetensors and JSON, resumable) every N steps (also at the end).")
    save_pipeline_every: int = _opt(0, "Also write the EMA pipeline into output_dir every N steps (0: only at the end).")
    save_model_epochs: Optional[int] = _opt(None, "Write the EMA pipeline every N epochs instead of every --save_pipeline_every steps (diffusers' flag).")
    checkpoints_total_limit: Optional[int] = _opt(3, "Keep at most this many checkpoints (None: all).")
    resume_from_checkpoint: Optional[str] = _opt(None, "'latest' or a checkpoint folder to resume from.")
    report_to: str = _opt("tensorboard", "accelerate trackers: tensorboard, wandb, all, or none.", aliases=["--logger"], choices=["tensorboard", "wandb", "all", "none"])
    logging_dir: str = _opt("logs", "Tracker folder, relative to output_dir.")
    log_every: int = _opt(10, "Log the loss every N steps.")
    progress_bar: bool = _opt(True, "Show a tqdm progress bar (main process).")

    # ------------------------------------------------------------------ the Hub
    push_to_hub: bool = _opt(False, "Create the Hub repo and upload the final pipeline with a model card.")
    hub_model_id: Optional[str] = _opt(None, "Hub repo id (default: the output folder's name).")
    hub_token: Optional[str] = _opt(None, "Hub token (default: the logged-in one).")
    hub_private: bool = _opt(False, "Create a private repo.", aliases=["--hub_private_repo"])

    def __post_init__(self):
        if self.train_batch_size < 1 or self.max_train_steps < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("train_batch_size, max_train_steps and gradient_accumulation_steps must be >= 1.")
        if self.sample_every < 0 or self.save_pipeline_every < 0:
            raise ValueError(f"sample_every and save_pipeline_every must be >= 0 (0: only at the end), got {self.sample_every} and {self.save_pipeline_every}.")
        if self.checkpointing_steps < 1:
            raise ValueError(f"checkpointing_steps must be >= 1, got {self.checkpointing_steps}.")
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise ValueError(f"checkpoints_total_limit must be >= 1 or None, got {self.checkpoints_total_limit}.")
        if not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay (--ema_decay / --ema_max_decay) must lie in (0, 1), got {self.ema_decay}.")
        if self.num_channels not in (None, 1, 3):
            raise ValueError(f"num_channels must be 1 or 3 (or None: that of the images), got {self.num_channels}.")
        if self.mixed_precision not in (None, "no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be no, fp16, bf16 or None (the accelerate config's), got {self.mixed_precision!r}.")
        for name in ("num_epochs", "save_images_epochs", "save_model_epochs"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (or None), got {getattr(self, name)}.")
        from diffusers.optimization import SchedulerType

        schedules = [schedule.value for schedule in SchedulerType]
        if self.lr_scheduler not in schedules:
            raise ValueError(f"lr_scheduler (--lr_scheduler) {self.lr_scheduler!r} is not a diffusers schedule; allowed: {', '.join(schedules)}.")
        self._check_beta_schedule()
        self._resolve_train_data_dir()
        if self.channel_mult is not None:
            self.channel_mult = [int(m) for m in self.channel_mult]
        self.attention_resolutions = [int(r) for r in self.attention_resolutions]

    def _check_beta_schedule(self) -> None:
        """diffusers' ``--ddpm_beta_schedule``: 'linear' is the beta(t) of the VP and sub-VP SDEs; other schedules
        (``squaredcos_cap_v2``, ...) are not an SDE of this project."""
        if self.ddpm_beta_schedule is None:
            return
        if self.ddpm_beta_schedule != "linear":
            raise ValueError(
                f"--ddpm_beta_schedule {self.ddpm_beta_schedule!r} is not supported: the VP and sub-VP SDEs have a linear "
                f"beta(t) (from --beta_min to --beta_max), and no SDE here has diffusers' other schedules; allowed: linear."
            )
        if self.sde not in ("vp", "subvp"):
            raise ValueError(f"--ddpm_beta_schedule linear is the beta(t) of the vp and subvp SDEs; the {self.sde!r} SDE has no beta schedule: leave the flag out.")

    def _resolve_train_data_dir(self) -> None:
        """diffusers' spellings of a local folder (``--train_data_dir D``, with or without ``--dataset_name
        imagefolder``) become ``dataset = D``."""
        if self.train_data_dir is None:
            if self.dataset == "imagefolder":
                raise ValueError("--dataset imagefolder needs the folder: add --train_data_dir PATH (or pass the folder itself as --dataset PATH).")
            return
        if not os.path.isdir(self.train_data_dir):
            raise ValueError(f"--train_data_dir {self.train_data_dir!r} is not a folder.")
        # "digits" is the default, i.e. no --dataset given
        if self.dataset not in ("imagefolder", "digits") and os.path.normpath(self.dataset) != os.path.normpath(self.train_data_dir):
            raise ValueError(f"--dataset {self.dataset!r} and --train_data_dir {self.train_data_dir!r} name two data sets; give one of them.")
        self.dataset = self.train_data_dir

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _parse_optional(kind):
    def parse(value: str):
        return None if value.lower() in ("none", "null") else kind(value)

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of `TrainingConfig`: one ``--name`` per field (plus the names diffusers'
    ``train_unconditional.py`` uses for the same setting, as aliases), booleans as ``--x`` / ``--no-x``."""
    parser = argparse.ArgumentParser(
        description="Train a score-based model through an SDE (Song et al. 2021) with accelerate. "
        "With no arguments: a VP model of scikit-learn's 8x8 digits on the CPU. The flag names of diffusers' "
        "examples/unconditional_image_generation/train_unconditional.py work too (see docs/training.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for f in dataclasses.fields(TrainingConfig):
        meta = dict(f.metadata)
        help_text = meta.pop("help", "")
        names = [f"--{f.name}", *meta.pop("aliases", [])]
        default = f.default
        type_name = str(f.type)
        if f.type is bool or type_name == "bool":
            parser.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction, default=default, help=help_text)
            continue
        base = int if "int" in type_name else float if "float" in type_name else str
        kind = _parse_optional(base) if "Optional" in type_name or default is None else base
        parser.add_argument(*names, dest=f.name, type=kind, default=default, help=help_text, **meta)
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> TrainingConfig:
    """A `TrainingConfig` from command-line arguments (``sys.argv[1:]`` if `argv` is None); a value the
    configuration refuses exits with the parser's usage and the reason."""
    parser = build_parser()
    args = parser.parse_args(argv)
    given = _given_options(parser, argv)
    if given & {"ema_inv_gamma", "ema_power"} and "ema_warmup" not in given:
        # diffusers' EMA always uses the power warm-up these two shape; giving one asks for it
        args.ema_warmup = True
    try:
        config = TrainingConfig(**vars(args))
        if config.preset is not None:
            from .presets import apply_preset

            # A flag given on the command line wins over the preset even when it repeats the default.
            config = apply_preset(config, keep=given)
        return config
    except ValueError as error:
        parser.error(str(error))


def _given_options(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> set:
    """The options `argv` sets, whatever their values: the parse with every default replaced by a marker."""
    marker = object()
    parser.set_defaults(**{action.dest: marker for action in parser._actions if action.dest != "help"})
    given = {name for name, value in vars(parser.parse_args(argv)).items() if value is not marker}
    return given
