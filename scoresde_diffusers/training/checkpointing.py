"""Atomic checkpoints without pickles: save, list, prune and resume.

A checkpoint is the folder ``checkpoint-<step>``; every file in it is safetensors or JSON, so loading one never runs
code (a pickle can: unpickling calls whatever the file names). It holds

| file | what |
|---|---|
| ``model.safetensors`` | the model's weights (of the unwrapped model) |
| ``unet_ema/`` | the EMA weights as a model folder (`EMAModel.save_pretrained`, as diffusers' training scripts save it; loads with ``<ModelClass>.from_pretrained``) |
| ``optimizer.safetensors`` + ``optimizer.json`` | the optimiser's state tensors and the rest of its state dict |
| ``lr_scheduler.json``, ``scaler.json`` | the learning-rate schedule and the fp16 gradient scaler |
| ``random_states_<i>.safetensors`` + ``.json`` | process i's Python, NumPy and torch RNG states and the run's own generators (training noise) |
| ``training_state.json`` | step, epoch, loss history, configuration |

accelerate's `save_state` is not used because it always writes every process's RNG state (and any custom state) as
``.pkl`` pickles. A checkpoint that holds a pickle (``.pkl``, ``.bin``, ``.pt``: one written by an older version or
by `save_state`) is refused before anything in it is read.

The checkpoint is first written to ``.tmp-checkpoint-<step>`` and then renamed with `os.replace`, an atomic operation
on POSIX file systems: a run killed at any moment leaves either the complete new checkpoint or none, never a
half-written folder that looks like the latest one. Leftover ``.tmp-*`` folders of a killed run are removed at the
next save. Old checkpoints are removed only after a new one is complete, by renaming them to a ``.tmp-`` name first,
and never when loading fails.
"""

import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file

logger = logging.getLogger(__name__)

STATE_FILE = "training_state.json"
MODEL_FILE = "model.safetensors"
EMA_FOLDER = "unet_ema"
OPTIMIZER_NAME = "optimizer"
LR_SCHEDULER_NAME = "lr_scheduler"
SCALER_NAME = "scaler"
RANDOM_STATES_NAME = "random_states_{}"
#: File endings of pickle-based formats (pickle, torch.save): never loaded from a checkpoint.
PICKLE_SUFFIXES = (".pkl", ".pickle", ".bin", ".pt", ".pth", ".ckpt")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_TMP_PREFIX = ".tmp-"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from (missing, incomplete, corrupt, or holding pickles)."""


@dataclass
class CheckpointParts:
    """What a checkpoint saves and restores besides the bookkeeping of ``training_state.json``.

    Args:
        model (`torch.nn.Module`): the (prepared) model; its unwrapped weights go to ``model.safetensors``.
        optimizer (*optional*): the (prepared) optimiser.
        lr_scheduler (*optional*): the (prepared) learning-rate schedule.
        ema (`diffusers.training_utils.EMAModel`, *optional*): made with `model_cls` and `model_config`, so that it
            saves as a model folder.
        generators (`Dict[str, torch.Generator]`): this process's own generators (e.g. the training noise), saved
            with its RNG states.
    """

    model: torch.nn.Module
    optimizer: Any = None
    lr_scheduler: Any = None
    ema: Any = None
    generators: Dict[str, torch.Generator] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- nested state <-> files
def _tensor_name(tensors: Dict[str, torch.Tensor], path: str) -> str:
    """`path`, or a numbered variant if a key containing dots already produced the same path."""
    name = path or "tensor"
    return name if name not in tensors else f"{name}#{len(tensors)}"


def _encode(obj, tensors: Dict[str, torch.Tensor], path: str):
    """`obj` as JSON, its tensors and arrays moved into `tensors` under their path (e.g. ``state.0.exp_avg``)."""
    if isinstance(obj, torch.Tensor):
        name = _tensor_name(tensors, path)
        tensors[name] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": name}
    if isinstance(obj, np.ndarray):
        name = _tensor_name(tensors, path)
        # safetensors has no uint32 in every version; int64 holds NumPy's MT19937 words exactly
        tensors[name] = torch.from_numpy(np.ascontiguousarray(obj).astype(np.int64))
        return {"__ndarray__": name, "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if all(isinstance(key, str) and not key.startswith("__") for key in obj):
            return {key: _encode(value, tensors, f"{path}.{key}".lstrip(".")) for key, value in obj.items()}
        # non-string keys (an optimiser's parameter ids) keep their type as [key, value] pairs
        return {"__items__": [[key, _encode(value, tensors, f"{path}.{key}".lstrip("."))] for key, value in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(value, tensors, f"{path}.{i}".lstrip(".")) for i, value in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(value, tensors, f"{path}.{i}".lstrip(".")) for i, value in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"Cannot save {type(obj).__name__} at {path or 'the top level'} of a checkpoint as JSON or safetensors.")


def _decode(obj, tensors: Dict[str, torch.Tensor]):
    if isinstance(obj, list):
        return [_decode(value, tensors) for value in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return tensors[obj["__ndarray__"]].numpy().astype(obj["dtype"])
    if "__tuple__" in obj:
        return tuple(_decode(value, tensors) for value in obj["__tuple__"])
    if "__items__" in obj:
        return {key: _decode(value, tensors) for key, value in obj["__items__"]}
    return {key: _decode(value, tensors) for key, value in obj.items()}


def save_state_files(folder: str, name: str, state) -> None:
    """Save a nested state (dicts, lists, tuples, numbers, strings, tensors, arrays) as ``<name>.json`` plus, if it
    holds tensors, ``<name>.safetensors``: the pickle-free form of a ``torch.save`` of a state dict."""
    tensors: Dict[str, torch.Tensor] = {}
    skeleton = _encode(state, tensors, "")
    if tensors:
        save_file(tensors, os.path.join(folder, f"{name}.safetensors"))
    with open(os.path.join(folder, f"{name}.json"), "w", encoding="utf-8") as f:
        json.dump(skeleton, f)


def load_state_files(folder: str, name: str):
    """The state `save_state_files` wrote (tensors on the CPU)."""
    with open(os.path.join(folder, f"{name}.json"), encoding="utf-8") as f:
        skeleton = json.load(f)
    tensor_file = os.path.join(folder, f"{name}.safetensors")
    return _decode(skeleton, load_file(tensor_file) if os.path.exists(tensor_file) else {})


def _random_states(generators: Dict[str, torch.Generator]) -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    states["generators"] = {name: generator.get_state() for name, generator in generators.items()}
    return states


def _set_random_states(states: dict, generators: Dict[str, torch.Generator]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    missing = sorted(set(generators) - set(states["generators"]))
    if missing:
        raise KeyError(f"no state for the generator(s) {missing}")
    for name, generator in generators.items():
        generator.set_state(states["generators"][name])


def pickled_files(path: str) -> List[str]:
    """Files under `path` in a pickle-based format (`PICKLE_SUFFIXES`), relative to `path`."""
    found = []
    for root, _, files in os.walk(path):
        found += [os.path.relpath(os.path.join(root, name), path) for name in files if name.lower().endswith(PICKLE_SUFFIXES)]
    return sorted(found)


def _write_parts(accelerator, folder: str, parts: CheckpointParts) -> None:
    """Every process writes its RNG states; the main process writes the rest (identical on every process)."""
    save_state_files(folder, RANDOM_STATES_NAME.format(accelerator.process_index), _random_states(parts.generators))
    if not accelerator.is_main_process:
        return
    from safetensors.torch import save_model

    save_model(accelerator.unwrap_model(parts.model), os.path.join(folder, MODEL_FILE))
    if parts.optimizer is not None:
        save_state_files(folder, OPTIMIZER_NAME, parts.optimizer.state_dict())
    if parts.lr_scheduler is not None:
        save_state_files(folder, LR_SCHEDULER_NAME, parts.lr_scheduler.state_dict())
    if getattr(accelerator, "scaler", None) is not None:
        save_state_files(folder, SCALER_NAME, accelerator.scaler.state_dict())
    if parts.ema is not None:
        parts.ema.save_pretrained(os.path.join(folder, EMA_FOLDER))


def _read_parts(accelerator, folder: str, parts: CheckpointParts, saved_processes: Optional[int]) -> None:
    from safetensors.torch import load_model

    model = accelerator.unwrap_model(parts.model)
    load_model(model, os.path.join(folder, MODEL_FILE), device=str(next(model.parameters()).device))
    if parts.optimizer is not None:
        parts.optimizer.load_state_dict(load_state_files(folder, OPTIMIZER_NAME))
    if parts.lr_scheduler is not None:
        parts.lr_scheduler.load_state_dict(load_state_files(folder, LR_SCHEDULER_NAME))
    if getattr(accelerator, "scaler", None) is not None and os.path.exists(os.path.join(folder, f"{SCALER_NAME}.json")):
        accelerator.scaler.load_state_dict(load_state_files(folder, SCALER_NAME))
    if parts.ema is not None:
        # What `EMAModel.from_pretrained` reads, without building a second EMA: the weights are the shadow
        # parameters, the EMA's own settings (decay, optimisation step, ...) were added to the model's config.
        ema_folder = os.path.join(folder, EMA_FOLDER)
        saved_config = type(model).load_config(ema_folder)
        ema_state = {key: saved_config[key] for key in parts.ema.state_dict() if key in saved_config}
        ema_model = type(model).from_pretrained(ema_folder)
        parts.ema.load_state_dict({**ema_state, "shadow_params": [p.detach() for p in ema_model.parameters()]})
        parts.ema.to(accelerator.device)
    name = RANDOM_STATES_NAME.format(accelerator.process_index)
    if os.path.exists(os.path.join(folder, f"{name}.json")):
        _set_random_states(load_state_files(folder, name), parts.generators)
    elif saved_processes is not None and saved_processes != accelerator.num_processes:
        # another number of processes: the data shards differ anyway, so fresh RNG streams are no loss of exactness
        logger.warning(f"{folder} was saved by {saved_processes} process(es); process {accelerator.process_index} starts fresh RNG streams.")
    else:
        raise FileNotFoundError(f"{name}.json is missing")


# ---------------------------------------------------------------------------------------------- folders
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


def save_checkpoint(
    accelerator, output_dir: str, step: int, state: dict, parts: CheckpointParts, total_limit: Optional[int] = None
) -> str:
    """Save the training state at `step` atomically; every process must call it (it synchronises them).

    Args:
        accelerator (`accelerate.Accelerator`): the run's accelerator.
        output_dir (`str`): the run folder.
        step (`int`): the optimiser step; the folder is ``checkpoint-<step>``.
        state (`dict`): JSON-serialisable bookkeeping (step, epoch, loss history) saved as ``training_state.json``.
        parts (`CheckpointParts`): model, optimiser, schedule, EMA and generators to save.
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
        os.makedirs(tmp)
    accelerator.wait_for_everyone()
    # 1. Everything into the temporary folder (each process writes its own RNG states there).
    _write_parts(accelerator, tmp, parts)
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


def load_checkpoint(accelerator, path: str, parts: CheckpointParts, output_dir: Optional[str] = None) -> dict:
    """Restore the training state saved in `path` into `parts` and return its ``training_state.json``.

    A checkpoint holding pickles is refused before anything is read from it; a missing state file or damaged
    tensors are a `CheckpointError` too. Each error says which other checkpoints exist; nothing on disk is changed.
    """
    others = [os.path.basename(p) for p in list_checkpoints(output_dir or os.path.dirname(os.path.abspath(path))) if os.path.abspath(p) != os.path.abspath(path)]
    hint = f" Other checkpoints (left untouched): {others or 'none'}; resume from one with --resume_from_checkpoint PATH."
    pickles = pickled_files(path)
    if pickles:
        raise CheckpointError(
            f"Checkpoint {path!r} holds pickled state ({', '.join(pickles[:5])}{', ...' if len(pickles) > 5 else ''}), as "
            f"accelerate's save_state and scoresde_diffusers before pickle-free checkpoints wrote it. Loading a pickle "
            f"can run any code the file names, so it is not loaded. To go on, start a new run (a new --output_dir, or "
            f"no --resume_from_checkpoint), or resume from a checkpoint this version wrote (only safetensors and JSON); "
            f"its weights in {MODEL_FILE} are safetensors and can still be read with safetensors.torch.load_file."
            f"{hint}"
        )
    state_file = os.path.join(path, STATE_FILE)
    try:
        with open(state_file, encoding="utf-8") as f:
            state = json.load(f)
        int(state["step"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"Checkpoint {path!r} is incomplete or corrupt: cannot read {STATE_FILE} ({error}).{hint}") from error
    try:
        _read_parts(accelerator, path, parts, state.get("num_processes"))
    except Exception as error:  # safetensors / json / torch raise many kinds on damaged or mismatched files
        raise CheckpointError(f"Checkpoint {path!r} is corrupt or does not match this model: {type(error).__name__}: {error}.{hint}") from error
    return state
