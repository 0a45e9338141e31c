"""The steps every training loop of the project shares: the accelerator, resuming, the progress bar, and a log line
around long periodic work (checkpoints, sample grids, uploads) so that a paused progress bar says why.

`trainer.train` (score models) and `classifier.train_classifier` (time-dependent classifiers) are built from these.
"""

import contextlib
import logging
import os
import shutil
import time
from typing import List, Optional, Tuple

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState, PartialState
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration
from tqdm.auto import tqdm

from .checkpointing import CheckpointParts, list_checkpoints, load_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)


def _log_with(report_to: Optional[str]):
    if report_to in (None, "", "none"):
        return None
    if report_to == "wandb":
        from accelerate.utils import is_wandb_available

        if not is_wandb_available():
            raise ValueError("--report_to wandb needs `pip install wandb`; use tensorboard or none.")
    return report_to


#: The file every run writes into its folder once it is set up: a folder holding it is a run of ours.
RUN_CONFIG_FILENAME = "training_config.json"


def is_run_folder(output_dir: str) -> bool:
    """Whether `output_dir` holds a training run of ours, to resume or continue: its configuration, a checkpoint, or
    the ``.tmp-checkpoint-*`` folder a kill during a checkpoint's save leaves."""
    if os.path.isfile(os.path.join(output_dir, RUN_CONFIG_FILENAME)) or list_checkpoints(output_dir):
        return True
    return any(name.startswith(".tmp-checkpoint-") for name in os.listdir(output_dir))


def check_output_dir(output_dir: str, overwrite: bool = True) -> None:
    """`output_dir` must be a folder or not exist yet (it is created once the run has been set up). Unless
    `overwrite`, a folder holding files must be a run of ours (`is_run_folder`), as diffusers' and transformers'
    ``--overwrite_output_dir`` asks: the run's files (unet/, scheduler/, samples.png, logs/, ...) would replace
    whatever is there."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"--output_dir {output_dir!r} is a file; give a folder (it is created if it does not exist).")
    if overwrite or not os.path.isdir(output_dir) or is_run_folder(output_dir):
        return
    entries = sorted(os.listdir(output_dir))
    if entries:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise ValueError(
            f"--output_dir {output_dir!r} is not empty ({shown}) and is not a training run (no {RUN_CONFIG_FILENAME}, no "
            f"checkpoint-* folder): the run's files could overwrite what is there. Give a new or empty folder, or add "
            f"--overwrite_output_dir to write into it anyway."
        )


class DiscardIfFailed:
    """A context for a training run: if the run raises (an error or Ctrl-C) and it started from a new or empty
    folder, remove what it wrote (the folder itself if the run created it), so that a failed run leaves nothing
    behind, unless a checkpoint was written, which ``--resume_from_checkpoint latest`` can go on from. A folder that
    held files before is left alone. Main process only; a kill -9 keeps everything. Set `accelerator` once the run
    has one, so that its trackers' open files are closed before they are removed.

    >>> with DiscardIfFailed(output_dir) as guard:  # doctest: +SKIP
    ...     guard.accelerator = create_accelerator(output_dir)
    ...     ...
    """

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.existed = os.path.isdir(output_dir)
        self.was_empty = not self.existed or not os.listdir(output_dir)
        self.accelerator: Optional[Accelerator] = None

    def __enter__(self) -> "DiscardIfFailed":
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        if kind is not None and self.was_empty:
            self.discard()
        return False  # the error goes on

    def discard(self) -> None:
        output_dir = self.output_dir
        if not os.path.isdir(output_dir) or not os.listdir(output_dir) and self.existed or list_checkpoints(output_dir):
            return
        if not PartialState().is_main_process:  # the state exists: something was written, after the accelerator
            return
        if self.accelerator is not None:
            with contextlib.suppress(Exception):
                self.accelerator.end_training()
        if self.existed:
            for name in os.listdir(output_dir):
                path = os.path.join(output_dir, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.remove(path)
        else:
            shutil.rmtree(output_dir, ignore_errors=True)
        logger.info(f"The run failed before its first checkpoint: removed what it had written into {output_dir}.")


def create_accelerator(
    output_dir: str,
    cpu: bool = False,
    mixed_precision: Optional[str] = None,
    gradient_accumulation_steps: int = 1,
    report_to: Optional[str] = None,
    logging_dir: str = "logs",
) -> Accelerator:
    """The run's `Accelerator`.

    `mixed_precision=None` keeps what ``accelerate config`` / ``accelerate launch --mixed_precision`` chose (the
    ``ACCELERATE_MIXED_PRECISION`` environment variable), as diffusers' scripts do when the flag is not given. fp16
    without CUDA is refused: accelerate would silently train in fp32.
    """
    # Several processes started by torchrun (what `accelerate launch --multi_gpu` runs) on a machine without CUDA:
    # accelerate only forms a CPU (gloo) process group when told `cpu=True`; otherwise each process would train
    # alone and they would all write the same folder.
    several_processes = int(os.environ.get("WORLD_SIZE", "1")) > 1
    # accelerate keeps its state in process-wide singletons; a second run in one process (a notebook, the tests)
    # may ask for another mixed precision or accumulation, so start from a fresh state (the process group stays).
    AcceleratorState._reset_state()
    GradientState._reset_state()
    accelerator = Accelerator(
        cpu=cpu or (several_processes and not torch.cuda.is_available()),
        gradient_accumulation_steps=gradient_accumulation_steps,
        mixed_precision=mixed_precision,
        log_with=_log_with(report_to),
        project_config=ProjectConfiguration(project_dir=output_dir, logging_dir=os.path.join(output_dir, logging_dir)),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    if accelerator.mixed_precision == "fp16" and accelerator.device.type != "cuda":
        source = "--mixed_precision fp16" if mixed_precision else "the accelerate config (mixed_precision: fp16)"
        raise ValueError(
            f"{source} needs a CUDA GPU, and this run is on {accelerator.device.type}: accelerate would train in fp32 "
            f"while the run records fp16. Use --mixed_precision bf16 (also on CPU) or no."
        )
    return accelerator


def restore_checkpoint(accelerator, checkpoint: Optional[str], parts: CheckpointParts, output_dir: str) -> Tuple[int, List[List[float]]]:
    """Load `checkpoint` (None: a new run) into `parts`; returns its step and the loss history up to it."""
    if checkpoint is None:
        return 0, []
    state = load_checkpoint(accelerator, checkpoint, parts, output_dir)
    step = int(state["step"])
    logger.info(f"Resumed from {checkpoint} at step {step}.")
    return step, [list(h) for h in state.get("loss_history", []) if h[0] <= step]


def progress_bar(accelerator, total: int, initial: int, enabled: bool, desc: str):
    return tqdm(total=total, initial=initial, disable=not (enabled and accelerator.is_local_main_process), desc=desc)


@contextlib.contextmanager
def announced(accelerator, what: str):
    """Log `what` before long work and its duration after (main process), so that a paused progress bar says why."""
    start = time.perf_counter()
    if accelerator.is_main_process:
        logger.info(f"{what} ...")
    yield
    if accelerator.is_main_process:
        logger.info(f"{what}: done in {time.perf_counter() - start:.1f} s.")


def checkpoint_now(accelerator, output_dir: str, step: int, state: dict, parts: CheckpointParts, total_limit: Optional[int]) -> str:
    """`save_checkpoint` with a log line; every process must call it."""
    with announced(accelerator, f"Step {step}: writing checkpoint-{step}"):
        return save_checkpoint(accelerator, output_dir, step, state, parts, total_limit)


__all__ = ["DiscardIfFailed", "announced", "check_output_dir", "is_run_folder", "checkpoint_now", "create_accelerator", "progress_bar", "restore_checkpoint"]
