"""Training of time-dependent classifiers p_t(y | x_t) for class-conditional sampling (Song et al. 2021, Appendix
I.1: a mixture of cross-entropy losses over noise scales, with t drawn uniformly).

Each step draws (x_0, y) from the labelled data, t ~ U(eps, 1) and x_t = m(t) x_0 + sigma(t) z (the scheduler's
`add_noise`, the SDE's perturbation kernel), and minimises the cross-entropy of ``classifier(x_t, timestep)``
against y, the timestep being the scheduler's model timestep of t, so the classifier is called exactly as the
score model is in `ScoreSdeClassConditionalPipeline`. accelerate runs it (devices, mixed precision,
multi-process), checkpoints are the atomic ones of `checkpointing.py`, and the end of training writes
``<output_dir>/classifier`` and ``<output_dir>/scheduler`` (``from_pretrained``-loadable) plus the held-out
accuracy at several noise levels in ``accuracy.json``. ``examples/train_classifier.py`` is the command line.
"""

import argparse
import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, TensorDataset

from ..models.classifier import MLPClassifier, TimeDependentClassifier
from ..registry import SDES
from .checkpointing import CheckpointParts, resolve_checkpoint, write_json_atomic
from .config import _opt
from .scaffolding import DiscardIfFailed, announced, check_output_dir, checkpoint_now, create_accelerator, progress_bar, restore_checkpoint

logger = logging.getLogger(__name__)

ACCURACY_FILENAME = "accuracy.json"


@dataclass
class ClassifierTrainingConfig:
    """Options of `train_classifier` (and of ``examples/train_classifier.py``, one ``--flag`` each); every field's
    help text, shown by ``python examples/train_classifier.py --help``, says what it does."""

    dataset: str = _opt("digits", "Labelled data set: digits (scikit-learn's 8x8 digits, 10 classes) or four_gaussians (2-D, the 4 components as classes).")
    sde: str = _opt("vp", "SDE noising the data (ve, vp, subvp or a plugin's name), with its scheduler's default configuration; --scheduler_path overrides it.")
    scheduler_path: Optional[str] = _opt(None, "A scheduler folder, or a pipeline folder with a scheduler/ subfolder (e.g. outputs/digits-vp), whose scheduler to train for.")
    resolution: int = _opt(8, "Image size of the digits.")
    output_dir: str = _opt("outputs/classifier-digits", "Folder of the checkpoints, the classifier/ and scheduler/ folders and accuracy.json.")
    train_batch_size: int = _opt(128, "Batch size per process.")
    max_train_steps: int = _opt(2000, "Number of optimiser updates (AdamW, cosine decay).")
    learning_rate: float = _opt(2e-3, "Peak learning rate.")
    weight_decay: float = _opt(0.0, "AdamW weight decay.")
    block_out_channels: Tuple[int, ...] = _opt((32, 64), "Widths of the image classifier's levels.", nargs="+")
    hidden_dim: int = _opt(128, "Width of the MLP classifier (vector data).")
    sampling_eps: float = _opt(1e-3, "Smallest training time t.")
    eval_fraction: float = _opt(0.2, "Share of the data held out for the accuracy report.")
    eval_times: Tuple[float, ...] = _opt((0.1, 0.25, 0.5, 0.75, 1.0), "Times t of the held-out accuracy report.", nargs="+")
    checkpointing_steps: Optional[int] = _opt(None, "Save a checkpoint every N steps and at the end (None: no checkpoints).")
    checkpoints_total_limit: Optional[int] = _opt(2, "Keep at most this many checkpoints (None: all).")
    resume_from_checkpoint: Optional[str] = _opt(None, "'latest', a checkpoint-<step> name or a checkpoint folder to resume from.")
    mixed_precision: Optional[str] = _opt(
        None, "no, fp16 (CUDA only) or bf16; None: what `accelerate config` / `accelerate launch --mixed_precision` chose.", choices=["no", "fp16", "bf16"]
    )
    seed: int = _opt(0, "Seed of the split, initialisation, batches and noise.")
    push_to_hub: bool = _opt(False, "Upload output_dir (without checkpoints) to the Hub at the end.")
    hub_model_id: Optional[str] = _opt(None, "Hub repo id (None: the output folder's name).")
    hub_token: Optional[str] = _opt(None, "Hub token (None: the logged-in one).")
    hub_private: bool = _opt(False, "Create a private repo.", aliases=["--hub_private_repo"])
    progress_bar: bool = _opt(True, "Show a tqdm progress bar (main process).")

    def __post_init__(self):
        if self.dataset not in LABELLED_DATASETS:
            raise ValueError(f"Unknown labelled dataset {self.dataset!r}. Allowed: {', '.join(sorted(LABELLED_DATASETS))}.")
        if self.scheduler_path is None and self.sde not in SDES:
            raise ValueError(f"Unknown SDE {self.sde!r}. Allowed: {', '.join(SDES.names())}.")
        if not 0 < self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must lie in (0, 1), got {self.eval_fraction}.")
        if self.max_train_steps < 1 or self.train_batch_size < 1:
            raise ValueError("max_train_steps and train_batch_size must be >= 1.")
        if not 0 < self.sampling_eps < 1:
            raise ValueError(f"sampling_eps must lie in (0, 1), got {self.sampling_eps}.")
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        self.eval_times = tuple(float(t) for t in self.eval_times)


@dataclass
class ClassifierTrainingResult:
    """What `train_classifier` returns: the folder, the last step, the held-out accuracy by time, the loss history."""

    output_dir: str
    global_step: int
    accuracy: Dict[float, float]
    chance: float
    loss_history: List[List[float]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- data and models
def _digits(resolution: int = 8, seed: int = 0):
    """(x, y): the training helper's ``digits`` images (same scaling to [-1, 1] and resizing) and their labels."""
    from sklearn.datasets import load_digits

    from ..data.datasets import digits

    data = digits(resolution=resolution)
    x = torch.stack([item[0] if isinstance(item, (tuple, list)) else item for item in data.dataset])
    return x, torch.from_numpy(load_digits().target).long()


def _four_gaussians(resolution: int = 8, seed: int = 0, num_samples: int = 20000):
    from ..models.gaussian_mixture import GaussianMixtureScoreModel

    model = GaussianMixtureScoreModel.four_gaussians()
    x, y = model.sample_data(num_samples, generator=torch.Generator().manual_seed(seed), return_labels=True)
    return x.float(), y.long()


#: Labelled data sets by name: functions ``(resolution, seed) -> (x (N, ...), y (N,))``.
LABELLED_DATASETS = {"digits": _digits, "four_gaussians": _four_gaussians}


def load_labelled_data(name: str = "digits", resolution: int = 8, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of a labelled data set of `LABELLED_DATASETS`."""
    if name not in LABELLED_DATASETS:
        raise ValueError(f"Unknown labelled dataset {name!r}. Allowed: {', '.join(sorted(LABELLED_DATASETS))}.")
    return LABELLED_DATASETS[name](resolution=resolution, seed=seed)


def build_scheduler(sde: str = "vp", scheduler_path: Optional[str] = None):
    """A score-SDE scheduler: loaded from `scheduler_path` (a scheduler folder or a pipeline folder), or the
    default one of `sde`."""
    from .. import schedulers

    if scheduler_path is None:
        scheduler_class = schedulers.pc_scheduler_class(sde)
        return scheduler_class(sde_type=sde) if scheduler_class is schedulers.ScoreSdePCScheduler else scheduler_class()
    folder = os.path.join(scheduler_path, "scheduler") if os.path.isdir(os.path.join(scheduler_path, "scheduler")) else scheduler_path
    with open(os.path.join(folder, "scheduler_config.json"), encoding="utf-8") as f:
        name = json.load(f).get("_class_name")
    scheduler_class = getattr(schedulers, name, None) if isinstance(name, str) else None
    if not (isinstance(scheduler_class, type) and issubclass(scheduler_class, schedulers.ScoreSdeSchedulerMixin)):
        raise ValueError(f"{folder} holds a {name}, not a score-SDE scheduler ({', '.join(n for n in schedulers.__all__ if n.endswith('Scheduler'))}).")
    return scheduler_class.from_pretrained(folder)


def build_classifier(sample_shape: Sequence[int], num_classes: int, scheduler, config: ClassifierTrainingConfig):
    """`TimeDependentClassifier` for (C, H, W) data, `MLPClassifier` for (D,); the time embedding matches the
    scheduler's timestep map (Fourier features of log sigma for ``sigma``, sinusoidal otherwise)."""
    embedding = "fourier" if scheduler.config.timestep_type == "sigma" else "positional"
    if len(sample_shape) == 3:
        channels, size, _ = sample_shape
        return TimeDependentClassifier(
            sample_size=size, in_channels=channels, num_classes=num_classes, block_out_channels=config.block_out_channels,
            time_embedding_type=embedding, norm_num_groups=min(8, *config.block_out_channels),
        )  # fmt: skip
    return MLPClassifier(dim=sample_shape[0], num_classes=num_classes, hidden_dim=config.hidden_dim, time_embedding_type=embedding)


def noisy_batch(scheduler, x0: torch.Tensor, t: torch.Tensor, generator: Optional[torch.Generator] = None):
    """(x_t, model timestep) for data `x0` at continuous times `t` (B,): x_t = m(t) x_0 + sigma(t) z."""
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    timestep = scheduler.t_to_timestep(t)
    return scheduler.add_noise(x0, noise, timestep), timestep


@torch.no_grad()
def evaluate_classifier(classifier, scheduler, x: torch.Tensor, y: torch.Tensor, times: Sequence[float], seed: int = 0, batch_size: int = 512) -> Dict[float, float]:
    """Accuracy of `classifier` on (x, y) noised to each time of `times` (fixed noise from `seed`)."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    accuracy = {}
    for t_value in times:
        correct = 0
        for start in range(0, x.shape[0], batch_size):
            x0, labels = x[start : start + batch_size], y[start : start + batch_size]
            t = torch.full((x0.shape[0],), float(t_value), device=x.device, dtype=torch.float64)
            x_t, timestep = noisy_batch(scheduler, x0, t, generator)
            logits = classifier(x_t.to(classifier.dtype), timestep).logits
            correct += int((logits.argmax(dim=1) == labels.to(logits.device)).sum())
        accuracy[float(t_value)] = correct / x.shape[0]
    return accuracy


# ---------------------------------------------------------------------------------------------- the loop
def train_classifier(config: Optional[ClassifierTrainingConfig] = None, **overrides) -> ClassifierTrainingResult:
    """Train a time-dependent classifier on noised labelled data; see the module docstring. Keyword `overrides`
    replace fields of `config` (or of the default config).

    The steps are those of `trainer.train` (`scaffolding`): the accelerator, resuming, the progress bar, announced
    checkpoints; only the data, the model and the loss are the classifier's.
    """
    config = dataclasses.replace(config or ClassifierTrainingConfig(), **overrides) if overrides else (config or ClassifierTrainingConfig())
    output_dir = config.output_dir
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    checkpoint = resolve_checkpoint(output_dir, config.resume_from_checkpoint)
    check_output_dir(output_dir)
    with DiscardIfFailed(output_dir) as guard:
        return _train_classifier(config, checkpoint, guard)


def _train_classifier(config: ClassifierTrainingConfig, checkpoint: Optional[str], guard: DiscardIfFailed) -> ClassifierTrainingResult:
    """The body of `train_classifier` inside its `DiscardIfFailed` guard."""
    output_dir = config.output_dir
    accelerator = guard.accelerator = create_accelerator(output_dir, mixed_precision=config.mixed_precision)
    set_seed(config.seed)

    # 1. Data: a seeded held-out split for the accuracy report.
    x, y = load_labelled_data(config.dataset, config.resolution, config.seed)
    num_classes = int(y.max()) + 1
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(config.seed))
    n_eval = max(1, int(round(config.eval_fraction * x.shape[0])))
    eval_idx, train_idx = order[:n_eval], order[n_eval:]
    dataloader = DataLoader(TensorDataset(x[train_idx], y[train_idx]), batch_size=config.train_batch_size, shuffle=True, drop_last=True)
    if len(dataloader) == 0:
        raise ValueError(f"{len(train_idx)} training items are fewer than one batch of {config.train_batch_size}; lower --train_batch_size.")

    # 2. Model, optimiser, schedule, and the run's own noise generator (checkpointed with it).
    scheduler = build_scheduler(config.sde, config.scheduler_path)
    classifier = build_classifier(tuple(x.shape[1:]), num_classes, scheduler, config)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    lr_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.max_train_steps)
    classifier, optimizer, dataloader, lr_scheduler = accelerator.prepare(classifier, optimizer, dataloader, lr_scheduler)
    generator = torch.Generator(device=accelerator.device).manual_seed(config.seed + 1)
    parts = CheckpointParts(model=classifier, optimizer=optimizer, lr_scheduler=lr_scheduler, generators={"noise": generator})
    global_step, loss_history = restore_checkpoint(accelerator, checkpoint, parts, output_dir)

    def training_state() -> dict:
        return {"step": global_step, "loss_history": loss_history, "num_processes": accelerator.num_processes, "config": dataclasses.asdict(config)}

    # 3. Cross-entropy on x_t at t ~ U(eps, 1): a mixture of cross-entropy losses over times (Song et al. 2021, Appendix I.1).
    progress = progress_bar(accelerator, config.max_train_steps, global_step, config.progress_bar, "classifier")
    classifier.train()
    while global_step < config.max_train_steps:
        for x0, labels in dataloader:
            t = config.sampling_eps + (1 - config.sampling_eps) * torch.rand(x0.shape[0], generator=generator, device=x0.device, dtype=torch.float64)
            x_t, timestep = noisy_batch(scheduler, x0, t, generator)
            with accelerator.autocast():
                logits = classifier(x_t, timestep).logits
                loss = torch.nn.functional.cross_entropy(logits.float(), labels)
            optimizer.zero_grad()
            accelerator.backward(loss)
            optimizer.step()
            lr_scheduler.step()
            global_step += 1
            progress.update()
            if global_step % 50 == 0 or global_step == config.max_train_steps:
                loss_history.append([global_step, float(accelerator.gather(loss.detach().reshape(1)).mean())])
                progress.set_postfix(loss=f"{loss_history[-1][1]:.3f}")
            if config.checkpointing_steps and global_step % config.checkpointing_steps == 0 and global_step < config.max_train_steps:
                checkpoint_now(accelerator, output_dir, global_step, training_state(), parts, config.checkpoints_total_limit)
            if global_step >= config.max_train_steps:
                break
    progress.close()
    if config.checkpointing_steps:
        checkpoint_now(accelerator, output_dir, global_step, training_state(), parts, config.checkpoints_total_limit)

    # 4. Save, report the held-out accuracy by noise level, optionally push.
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(classifier).eval()
    accuracy = evaluate_classifier(unwrapped, scheduler, x[eval_idx].to(accelerator.device), y[eval_idx], config.eval_times, seed=config.seed)
    chance = float(torch.bincount(y[eval_idx], minlength=num_classes).max()) / n_eval
    if accelerator.is_main_process:
        unwrapped.save_pretrained(os.path.join(output_dir, "classifier"))
        scheduler.save_pretrained(os.path.join(output_dir, "scheduler"))
        report = {"dataset": config.dataset, "steps": global_step, "chance": chance, "accuracy_by_t": {str(k): v for k, v in accuracy.items()}}
        write_json_atomic(os.path.join(output_dir, ACCURACY_FILENAME), report)
        for t_value, value in accuracy.items():
            logger.info("held-out accuracy at t=%.2f: %.3f (chance %.3f)", t_value, value, chance)
        if config.push_to_hub:
            from huggingface_hub import create_repo, upload_folder

            with announced(accelerator, f"Uploading {output_dir} to the Hub"):
                repo_id = create_repo(config.hub_model_id or os.path.basename(os.path.normpath(output_dir)), exist_ok=True, token=config.hub_token, private=config.hub_private).repo_id
                upload_folder(repo_id=repo_id, folder_path=output_dir, ignore_patterns=["checkpoint-*", ".tmp-*"], token=config.hub_token, commit_message="End of training")
    accelerator.end_training()
    return ClassifierTrainingResult(output_dir, global_step, accuracy, chance, loss_history)


# ---------------------------------------------------------------------------------------------- command line
def build_classifier_parser() -> argparse.ArgumentParser:
    """One ``--flag`` per `ClassifierTrainingConfig` field, with its help text and default."""
    parser = argparse.ArgumentParser(
        description="Train a time-dependent classifier p_t(y | x_t) for class-conditional sampling.", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    for f in dataclasses.fields(ClassifierTrainingConfig):
        meta = dict(f.metadata)
        names = [f"--{f.name}", *meta.pop("aliases", [])]
        default = f.default
        if f.type is bool or isinstance(default, bool):
            parser.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction, default=default, **meta)
        elif isinstance(default, tuple):
            kind = float if default and isinstance(default[0], float) else int
            parser.add_argument(*names, dest=f.name, type=kind, default=default, **meta)
        else:
            kinds = (f.type, *getattr(f.type, "__args__", ()))  # Optional[int] -> (Optional[int], int, NoneType)
            kind = int if int in kinds else float if float in kinds else str
            parser.add_argument(*names, dest=f.name, type=kind, default=default, **meta)
    return parser


def parse_classifier_args(argv: Optional[Sequence[str]] = None) -> ClassifierTrainingConfig:
    """`ClassifierTrainingConfig` from command-line arguments (errors name the flag)."""
    args = build_classifier_parser().parse_args(argv)
    try:
        return ClassifierTrainingConfig(**vars(args))
    except ValueError as error:
        build_classifier_parser().error(str(error))


__all__ = [
    "ClassifierTrainingConfig",
    "ClassifierTrainingResult",
    "LABELLED_DATASETS",
    "build_classifier",
    "evaluate_classifier",
    "load_labelled_data",
    "parse_classifier_args",
    "train_classifier",
]
