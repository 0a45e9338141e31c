"""Atomic accelerate checkpoints: save, list, prune and resume.

A checkpoint is the folder ``checkpoint-<step>`` written by `accelerator.save_state` (model, optimiser, learning-rate
schedule, RNG states of every process, and every object registered with `register_for_checkpointing`, here the EMA),
plus ``training_state.json`` (step, epoch, loss history). It is first written to ``.tmp-checkpoint-<step>`` and then
renamed with `os.replace`, an atomic operation on POSIX file systems: a run killed at any moment leaves either the
complete new checkpoint or none, never a half-written folder that looks like the latest one. Leftover ``.tmp-*``
folders of a killed run are removed at the next save. Old checkpoints are removed only after a new one is complete,
by renaming them to a ``.tmp-`` name first, and never when loading fails.
"""

import json
import os
import re
import shutil
from typing import List, Optional

STATE_FILE = "training_state.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_TMP_PREFIX = ".tmp-"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from (missing, incomplete or corrupt)."""


def list_checkpoints(output_dir: str) -> List[str]:
    """Complete checkpoint folders in `output_dir`, oldest first (by step)."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT.match(name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(match.group(1)), os.path.join(output_dir, name)))
    return [path for _, path in sorted(found)]


def latest_checkpoint(output_dir: str) -> Optional[str]:
    """The checkpoint with the highest step, or None."""
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    """Remove a folder so that no partly deleted folder keeps a checkpoint name: rename first, then delete."""
    parent, name = os.path.split(path)
    doomed = os.path.join(parent, f"{_TMP_PREFIX}removing-{name}")
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def write_json_atomic(path: str, payload: dict) -> None:
    """Write JSON to a temporary file, fsync it, and rename it over `path`."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(accelerator, output_dir: str, step: int, state: dict, total_limit: Optional[int] = None) -> str:
    """Save the training state at `step` atomically; every process must call it (it synchronises them).

    Args:
        accelerator (`accelerate.Accelerator`): the run's accelerator (its `save_state` writes the tensors).
        output_dir (`str`): the run folder.
        step (`int`): the optimiser step; the folder is ``checkpoint-<step>``.
        state (`dict`): JSON-serialisable bookkeeping (step, epoch, loss history) saved as ``training_state.json``.
        total_limit (`int`, *optional*): keep at most this many checkpoints, removing the oldest.

    Returns:
        `str`: the checkpoint folder.
    """
    final = os.path.join(output_dir, f"checkpoint-{step}")
    tmp = os.path.join(output_dir, f"{_TMP_PREFIX}checkpoint-{step}")
    if accelerator.is_main_process:
        os.makedirs(output_dir, exist_ok=True)
        for name in os.listdir(output_dir):  # leftovers of a killed run
            if name.startswith(_TMP_PREFIX):
                shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)
    accelerator.wait_for_everyone()
    # 1. Everything into the temporary folder (each process writes its own RNG state there).
    accelerator.save_state(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json_atomic(os.path.join(tmp, STATE_FILE), state)
        _fsync_dir(tmp)
        # 2. The atomic switch: the checkpoint appears complete or not at all.
        if os.path.exists(final):
            _remove(final)
        os.replace(tmp, final)
        _fsync_dir(output_dir)
        # 3. Only now may old checkpoints go.
        if total_limit is not None:
            for old in list_checkpoints(output_dir)[:-total_limit]:
                _remove(old)
    accelerator.wait_for_everyone()
    return final


def resolve_checkpoint(output_dir: str, resume_from_checkpoint: Optional[str]) -> Optional[str]:
    """The checkpoint folder `resume_from_checkpoint` names: ``"latest"`` (None if there is none yet, so that a
    preemptible job can always pass it), a folder path, or a ``checkpoint-<step>`` name inside `output_dir`.
    A named checkpoint that does not exist is a `CheckpointError` listing the ones that do."""
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        return latest_checkpoint(output_dir)
    path = resume_from_checkpoint
    if not os.path.isdir(path):
        path = os.path.join(output_dir, resume_from_checkpoint)
    if not os.path.isdir(path):
        available = [os.path.basename(p) for p in list_checkpoints(output_dir)]
        raise CheckpointError(
            f"Checkpoint {resume_from_checkpoint!r} does not exist. Checkpoints in {output_dir!r}: {available or 'none'}; "
            f"pass one of them or 'latest'."
        )
    return path


def load_checkpoint(accelerator, path: str, output_dir: Optional[str] = None) -> dict:
    """Restore the training state saved in `path` and return its ``training_state.json``.

    A missing state file or a failing `load_state` (truncated or corrupt tensors) is a `CheckpointError` that says
    which other checkpoints exist; nothing on disk is changed.
    """
    state_file = os.path.join(path, STATE_FILE)
    others = [os.path.basename(p) for p in list_checkpoints(output_dir or os.path.dirname(os.path.abspath(path))) if os.path.abspath(p) != os.path.abspath(path)]
    hint = f" Other checkpoints (left untouched): {others or 'none'}; resume from one with --resume_from_checkpoint PATH."
    try:
        with open(state_file, encoding="utf-8") as f:
            state = json.load(f)
        int(state["step"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"Checkpoint {path!r} is incomplete or corrupt: cannot read {STATE_FILE} ({error}).{hint}") from error
    try:
        accelerator.load_state(path)
    except Exception as error:  # accelerate / torch / safetensors raise many kinds on damaged files
        raise CheckpointError(f"Checkpoint {path!r} is corrupt or does not match this model: {type(error).__name__}: {error}.{hint}") from error
    return state
