"""The training loop: accelerate, Adam with warm-up, gradient clipping, EMA, atomic checkpoints, sample grids.

The shape follows diffusers' ``examples/unconditional_image_generation/train_unconditional.py``; what is ours is the
score-matching loss (`losses.py`), the score-SDE scheduler that the model is trained for, the atomic checkpoints
(`checkpointing.py`) and the final folder, a `ScoreSdePCPipeline` whose UNet holds the EMA weights. Sources of the
recipe: score_sde's ``run_lib.train`` and configs (Adam, lr 2e-4, warm-up, grad_clip 1, EMA), as in
Song et al. (2021), Appendix H (EMA 0.999/0.9999, sampling and training eps).

`train` is five steps, each a function of a `TrainingRun` (the set-up objects and the progress of the run):
`setup_training` (accelerator, data, model, optimiser, EMA; nothing is written before all of it succeeded),
`resume_training`, `training_step` (one micro-batch; an update after the last one of an accumulation),
`periodic_work` (log, checkpoint, sample grid, pipeline) and `finish_training` (last checkpoint, EMA pipeline, grid,
loss curve, model card, Hub). The accelerator, resuming, the progress bar and the announced long work are shared with
the classifier trainer (`scaffolding.py`).

Multi-process: data is sharded by `accelerator.prepare`, every process computes the loss on its shard and the
gradients are averaged; only the main process writes sample grids, the final pipeline, the plots and the Hub
upload. Checkpoints (`checkpointing.py`: safetensors and JSON only, each process its RNG states) are switched in
atomically by the main process.
"""

import contextlib
import dataclasses
import inspect
import logging
import os
import time
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from torch.utils.data import DataLoader

from ..data import TrainingData, load_training_data
from ..models.mlp import MLPScoreModel
from ..models.score_sde_configs import create_score_sde_model, get_score_sde_config
from ..models.unet_presets import MODEL_PRESETS, PRESET_PARAMETRIZATION, create_unet
from .checkpointing import CheckpointError, CheckpointParts, resolve_checkpoint, write_json_atomic
from .config import TrainingConfig
from .losses import get_loss
from .plotting import save_loss_plot, save_samples_figure
from .presets import apply_preset
from .scaffolding import RUN_CONFIG_FILENAME, DiscardIfFailed, announced, check_output_dir, checkpoint_now, create_accelerator, progress_bar, restore_checkpoint

logger = get_logger(__name__)

GRID_FILENAME = "samples.png"
LOSS_PLOT_FILENAME = "loss.png"
LOSS_HISTORY_FILENAME = "loss_history.csv"


@dataclass
class TrainingResult:
    """What `train` returns: the run folder, the last step and the (step, loss) history (main process)."""

    output_dir: str
    global_step: int
    loss_history: List[List[float]] = field(default_factory=list)
    resumed_from: Optional[str] = None
    samples: Optional[torch.Tensor] = None


# ---------------------------------------------------------------------------------------------- building blocks
SDE_PARAMETERS = ("beta_min", "beta_max", "sigma_min", "sigma_max")


def build_scheduler(config: TrainingConfig, prediction_type: Optional[str], timestep_type: Optional[str]):
    """The score-SDE scheduler the model is trained for and sampled with (saved in the final pipeline): the SDE's own
    predictor-corrector scheduler, or `ScoreSdePCScheduler` for an SDE registered by a plugin."""
    from ..schedulers import ScoreSdePCScheduler, pc_scheduler_class

    try:
        scheduler_class = pc_scheduler_class(config.sde)
    except ValueError as err:
        raise ValueError(f"--sde {config.sde!r} is not allowed: {err}") from None
    kwargs = {"num_train_timesteps": config.num_train_timesteps}
    optional = {
        "prediction_type": prediction_type,
        "timestep_type": timestep_type,
        **{name: getattr(config, name) for name in SDE_PARAMETERS},
        "predictor": config.predictor,
        "corrector": config.corrector,
        "snr": config.snr,
        "sampling_eps": config.sampling_eps,
    }
    if scheduler_class is ScoreSdePCScheduler:
        # A plugin's SDE: its parameters go into ``sde_config`` (the scheduler checks them against its constructor).
        kwargs["sde_type"] = config.sde
        kwargs["sde_config"] = {name: optional.pop(name) for name in SDE_PARAMETERS if optional[name] is not None}
    accepted = set(inspect.signature(scheduler_class.__init__).parameters)
    for key, value in optional.items():
        if value is None:
            continue
        if key not in accepted:
            raise ValueError(f"--{key} does not apply to the {config.sde!r} SDE ({scheduler_class.__name__}).")
        kwargs[key] = value
    return scheduler_class(**kwargs)


#: How new image models of a variance-exploding SDE are parametrised by default: EDM's preconditioning (Karras et al.
#: 2022, Table 1), the network called with t (N - 1), a positional embedding of log sigma for the VE SDE.
PRECONDITIONED = {"prediction_type": "edm", "timestep_type": "scaled"}


def _needs_preconditioning(config: TrainingConfig) -> bool:
    """Whether a new image model gets `PRECONDITIONED` by default: when its SDE's noisy inputs outgrow the data
    (prior std above 1, the data's scale: the VE SDE) and neither the prediction type nor the timestep map is given.

    Why: with x_t unscaled (std up to sigma_max) and a score output divided by sigma (NCSN++), the denoiser error is
    sigma times the network's, and score_sde's lambda = sigma^2 accepts it. On the digits this gave a denoiser at
    sigma = 14 worse than the data mean (RMSE 1.45 against a data std of 0.77); the noisy PC loop corrects it, but
    the probability-flow ODE ended at +-34 for data in [-1, 1]. Preconditioned, the same run samples with the ODE at
    10 NFE as well as with 200 PC steps (docs/ode_and_likelihood.md)."""
    if config.prediction_type is not None or config.timestep_type is not None:
        return False
    from ..sdes import SDES

    parameters = {name: getattr(config, name) for name in ("beta_min", "beta_max", "sigma_min", "sigma_max")}
    try:
        sde = SDES.get(config.sde).from_parameters(config.num_train_timesteps, **parameters)
    except (TypeError, ValueError):  # an SDE that needs parameters we do not know: keep its own conventions
        return False
    return sde.prior_std > 1


def _conditions_on_sigma(config: TrainingConfig) -> bool:
    """Whether the model is called with sigma(t): asked for, or the convention of the SDE's models (VE: NCSN++)."""
    from ..sdes import SDES

    timestep_type = config.timestep_type or SDES.get(config.sde).default_timestep_type
    return timestep_type == "sigma"


def with_data_range(data: TrainingData, data_range) -> TrainingData:
    """`data` (images in [-1, 1]) mapped affinely onto `data_range`, e.g. score_sde's uncentred [0, 1]."""
    low, high = (float(v) for v in data_range)
    if (low, high) == tuple(data.data_range):
        return data
    old_low, old_high = data.data_range
    scale = (high - low) / (old_high - old_low)
    dataset = _MappedDataset(data.dataset, lambda x: low + (x - old_low) * scale)
    return dataclasses.replace(data, dataset=dataset, data_range=(low, high))


class _MappedDataset(torch.utils.data.Dataset):
    def __init__(self, dataset, fn):
        self.dataset, self.fn = dataset, fn

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        item = self.dataset[index]
        return tuple(self.fn(x) for x in item) if isinstance(item, tuple) else self.fn(item)


def build_preset_model_and_scheduler(config: TrainingConfig, data: TrainingData):
    """score_sde's network of ``config.preset`` at the data's size and channels (and the width options, which the
    preset set unless given), with the scheduler that calls it as score_sde does."""
    preset = get_score_sde_config(config.preset)
    if not data.is_image:
        raise ValueError(f"--preset {config.preset} is an image network; {data.name!r} holds vectors of shape {data.sample_shape}.")
    channels, resolution = data.sample_shape[0], data.sample_shape[1]
    model = create_score_sde_model(
        preset, sample_size=resolution, in_channels=channels, nf=config.width, ch_mult=tuple(config.channel_mult),
        num_res_blocks=config.layers_per_block, attn_resolutions=tuple(config.attention_resolutions), dropout=config.dropout,
    )
    prediction_type = config.prediction_type or preset.prediction_type
    timestep_type = config.timestep_type or preset.timestep_type
    return model, build_scheduler(config, prediction_type, timestep_type)


def build_model_and_scheduler(config: TrainingConfig, data: TrainingData):
    """The score model and its scheduler, chosen together so the model's conditioning matches the timestep map."""
    if config.preset is not None:
        return build_preset_model_and_scheduler(config, data)
    model_name = config.model
    precondition = model_name == "auto" and data.is_image and _needs_preconditioning(config)
    if precondition:
        model_name = "ddpmpp"
    elif model_name == "auto":
        model_name = ("ncsnpp" if _conditions_on_sigma(config) else "ddpmpp") if data.is_image else "mlp"
    if data.is_image and model_name == "mlp":
        raise ValueError(f"The mlp model is for vector data; {data.name!r} holds images of shape {data.sample_shape}. Use a UNet preset ({', '.join(MODEL_PRESETS.names())}).")
    if not data.is_image and model_name != "mlp":
        raise ValueError(f"{data.name!r} holds vectors of shape {data.sample_shape}; use --model mlp (or auto), not {model_name!r}.")

    if model_name == "mlp":
        fourier = _conditions_on_sigma(config)
        model = MLPScoreModel(
            dim=data.sample_shape[0],
            hidden_dim=config.mlp_hidden_dim,
            num_layers=config.mlp_layers,
            time_embedding_type="fourier" if fourier else "positional",
        )
        prediction_type = config.prediction_type or "epsilon"
        timestep_type = config.timestep_type or ("sigma" if fourier else None)
    else:
        channels, resolution = data.sample_shape[0], data.sample_shape[1]
        if config.model_config is not None:
            model = create_unet(resolution=resolution, in_channels=channels, config_file=config.model_config)
            fourier = model.config.time_embedding_type == "fourier"
            defaults = PRESET_PARAMETRIZATION["ncsnpp" if fourier else "ddpmpp"]
        else:
            if model_name not in MODEL_PRESETS:
                raise ValueError(f"Unknown model {model_name!r}. Allowed: auto, mlp, {', '.join(MODEL_PRESETS.names())}.")
            model = create_unet(
                model_name,
                resolution=resolution,
                in_channels=channels,
                width=config.width,
                channel_mult=config.channel_mult,
                layers_per_block=config.layers_per_block,
                attention_resolutions=config.attention_resolutions,
                dropout=config.dropout,
            )
            fourier = model.config.time_embedding_type == "fourier"
            defaults = PRECONDITIONED if precondition else PRESET_PARAMETRIZATION.get(model_name, {"prediction_type": "epsilon", "timestep_type": None})
        prediction_type = config.prediction_type or defaults["prediction_type"]
        timestep_type = config.timestep_type or defaults["timestep_type"]
        if fourier and (timestep_type or "sigma") != "sigma":
            raise ValueError(
                f"A UNet with Fourier time embedding takes log of its timestep and divides its output by it: it must be "
                f"called with sigma(t) > 0, i.e. timestep_type='sigma', not {timestep_type!r}."
            )
    scheduler = build_scheduler(config, prediction_type, timestep_type)
    return model, scheduler

def make_pipeline(model, scheduler, data: TrainingData):
    from ..pipelines.score_sde_pc import ScoreSdePCPipeline

    pipeline = ScoreSdePCPipeline(unet=model, scheduler=scheduler, data_range=tuple(data.data_range), num_levels=data.num_levels)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@torch.no_grad()
def generate_samples(
    model, scheduler, data: TrainingData, num_samples: int, num_inference_steps: int, seed: int, progress: Optional[str] = None
) -> torch.Tensor:
    """Samples of the model with the PC pipeline (the caller puts the EMA weights in place); `progress`, if given,
    is the description of a progress bar over the sampling steps."""
    was_training = model.training
    model.eval()
    try:
        pipeline = make_pipeline(model, scheduler, data)
        if progress is not None:
            pipeline.set_progress_bar_config(disable=False, desc=progress, leave=False)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        samples = pipeline(batch_size=num_samples, num_inference_steps=num_inference_steps, generator=generator, output_type="pt").images
    finally:
        model.train(was_training)
    return samples.float().cpu()


def _tracker_config(config: TrainingConfig) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in config.to_dict().items()}


def log_images_to_trackers(accelerator, samples: torch.Tensor, data_range, step: int) -> None:
    """Image samples (B, C, H, W) to the TensorBoard / W&B trackers, as diffusers' training examples log them."""
    low, high = data_range
    images = (((samples.float().cpu() - low) / (high - low)).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_images("samples", images, step)
        elif tracker.name == "wandb":
            import wandb

            tracker.log({"samples": [wandb.Image(image.transpose(1, 2, 0)) for image in images]}, step=step)


# ---------------------------------------------------------------------------------------------- a run, step by step
@dataclass
class TrainingRun:
    """What the steps of `train` share: the set-up objects and the progress of the run."""

    config: TrainingConfig
    accelerator: Accelerator
    data: TrainingData
    model: torch.nn.Module
    scheduler: object
    loss_fn: object
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    dataloader: DataLoader
    ema: Optional[EMAModel]
    noise: torch.Generator
    updates_per_epoch: int
    num_params: int
    global_step: int = 0
    epoch: int = 0
    history: List[List[float]] = field(default_factory=list)
    resumed_from: Optional[str] = None
    running_loss: float = 0.0
    micro_batches: int = 0

    @property
    def parts(self) -> CheckpointParts:
        return CheckpointParts(self.model, self.optimizer, self.lr_scheduler, self.ema, {"noise": self.noise})

    def training_state(self) -> dict:
        """The bookkeeping of a checkpoint (``training_state.json``)."""
        return {
            "step": self.global_step,
            "epoch": self.epoch,
            "num_processes": self.accelerator.num_processes,
            "batches_per_epoch_per_process": len(self.dataloader),
            "loss_history": self.history,
            "config": self.config.to_dict(),
        }

    @contextlib.contextmanager
    def ema_weights(self):
        """The unwrapped model holding the EMA weights (its own ones without EMA) for the duration of the block."""
        unwrapped = self.accelerator.unwrap_model(self.model)
        if self.ema is not None:
            self.ema.store(unwrapped.parameters())
            self.ema.copy_to(unwrapped.parameters())
        try:
            yield unwrapped
        finally:
            if self.ema is not None:
                self.ema.restore(unwrapped.parameters())


def _check_channels(config: TrainingConfig, data: TrainingData) -> None:
    if config.num_channels is None:
        return
    if not data.is_image:
        raise ValueError(f"--num_channels applies to images; {data.name!r} holds vectors of shape {data.sample_shape}.")
    if data.sample_shape[0] != config.num_channels:
        raise ValueError(
            f"--num_channels {config.num_channels}: {data.name!r} has {data.sample_shape[0]} channel(s) and cannot be "
            f"converted; leave --num_channels out (or give {data.sample_shape[0]})."
        )


def enable_xformers_attention(model: torch.nn.Module) -> None:
    """diffusers' ``--enable_xformers_memory_efficient_attention``: the model's attention layers through xformers,
    refused with the reason when xformers is missing or the model has no such switch."""
    from diffusers.utils import is_xformers_available

    if not is_xformers_available():
        raise ValueError(
            "--enable_xformers_memory_efficient_attention needs xformers, which is not installed: `pip install xformers` "
            "(a build for your torch and CUDA), or leave the flag out."
        )
    if not hasattr(model, "enable_xformers_memory_efficient_attention"):
        raise ValueError(f"--enable_xformers_memory_efficient_attention: the {type(model).__name__} model has no xformers attention; leave the flag out.")
    model.enable_xformers_memory_efficient_attention()


def build_optimizer_and_ema(config: TrainingConfig, model: torch.nn.Module):
    """AdamW over the model's parameters and, with `use_ema`, diffusers' `EMAModel` of them (None otherwise)."""
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_epsilon,
        weight_decay=config.adam_weight_decay,
    )
    if not config.use_ema:
        return optimizer, None
    ema = EMAModel(
        model.parameters(),
        decay=config.ema_decay,
        use_ema_warmup=config.ema_warmup,
        inv_gamma=config.ema_inv_gamma,
        power=config.ema_power,
        # with the class and config, `save_pretrained` writes the EMA as a loadable model folder
        model_cls=type(model),
        model_config=model.config,
    )
    return optimizer, ema


def steps_from_epochs(config: TrainingConfig, updates_per_epoch: int) -> TrainingConfig:
    """diffusers' epoch-counted flags (`num_epochs`, `save_images_epochs`, `save_model_epochs`) as the step counts
    they stand for, once an epoch's length is known."""
    in_steps = {
        "max_train_steps": config.num_epochs,
        "sample_every": config.save_images_epochs,
        "save_pipeline_every": config.save_model_epochs,
    }
    return dataclasses.replace(config, **{name: epochs * updates_per_epoch for name, epochs in in_steps.items() if epochs is not None})


def build_lr_scheduler(config: TrainingConfig, prepared_optimizer, num_processes: int):
    """diffusers' `get_scheduler` schedule (warm-up, then `lr_scheduler`) of the optimiser inside accelerate's
    wrapper, so that `accelerator.prepare` pairs the two."""
    return get_scheduler(
        config.lr_scheduler,
        optimizer=prepared_optimizer.optimizer,
        # the prepared schedule steps once per process per update (accelerate), hence the factor
        num_warmup_steps=config.lr_warmup_steps * num_processes,
        num_training_steps=config.max_train_steps * num_processes,
    )


def setup_training(config: TrainingConfig) -> TrainingRun:
    """1. Accelerator, data, model, scheduler, loss, optimiser, schedule, EMA; steps counted in epochs if asked.
    Nothing is written before everything is set up."""
    config = apply_preset(config)
    check_output_dir(config.output_dir, overwrite=config.overwrite_output_dir)
    accelerator = create_accelerator(
        config.output_dir, config.cpu, config.mixed_precision, config.gradient_accumulation_steps, config.report_to, config.logging_dir
    )
    # the precision that runs (the accelerate config's when not given) is the one recorded
    config = dataclasses.replace(config, mixed_precision=accelerator.mixed_precision)

    # Same seed everywhere so every process builds the same initial weights.
    set_seed(config.seed)
    data = load_training_data(
        config.dataset,
        resolution=config.resolution,
        num_channels=config.num_channels,
        image_column=config.image_column,
        split=config.dataset_split,
        center_crop=config.center_crop,
        random_flip=config.random_flip,
        num_samples=config.num_samples,
        seed=config.seed,
        cache_dir=config.cache_dir,
        config_name=config.dataset_config_name,
    )
    _check_channels(config, data)
    if config.preset is not None:
        data = with_data_range(data, get_score_sde_config(config.preset).data_range)
    model, scheduler = build_model_and_scheduler(config, data)
    if config.enable_xformers_memory_efficient_attention:
        enable_xformers_attention(model)
    loss_fn = get_loss(config.loss, scheduler, reduce_mean=config.reduce_mean, eps=config.train_eps)
    optimizer, ema = build_optimizer_and_ema(config, model)
    if len(data.dataset) < config.train_batch_size * accelerator.num_processes:
        raise ValueError(
            f"The data set has {len(data.dataset)} items, fewer than one batch per process "
            f"({config.train_batch_size} x {accelerator.num_processes}); lower --train_batch_size."
        )
    dataloader = DataLoader(data.dataset, batch_size=config.train_batch_size, shuffle=True, drop_last=True, num_workers=config.dataloader_num_workers)
    model, optimizer, dataloader = accelerator.prepare(model, optimizer, dataloader)
    updates_per_epoch = max(1, len(dataloader) // config.gradient_accumulation_steps)
    config = steps_from_epochs(config, updates_per_epoch)
    lr_scheduler = accelerator.prepare(build_lr_scheduler(config, optimizer, accelerator.num_processes))
    if ema is not None:
        ema.to(accelerator.device)
    # A dedicated generator of the training times and noise, rather than the global RNG, makes a resumed run draw
    # exactly the noise of an uninterrupted one: the global RNG is also consumed by things a resume does differently
    # (creating a data loader iterator draws a base seed from it). Different noise on every process (their data
    # shards differ too).
    noise = torch.Generator(device=accelerator.device).manual_seed(config.seed + 1_000_003 * accelerator.process_index)

    if accelerator.is_main_process:
        os.makedirs(config.output_dir, exist_ok=True)
        accelerator.init_trackers("score_sde_training", config=_tracker_config(config))
        write_json_atomic(os.path.join(config.output_dir, RUN_CONFIG_FILENAME), config.to_dict())
    num_params = sum(p.numel() for p in model.parameters())
    logger.info(
        f"Training {type(accelerator.unwrap_model(model)).__name__} ({num_params / 1e6:.2f}M parameters) on {data.name} "
        f"{data.sample_shape} x {len(data.dataset)}, {config.sde} SDE, {config.loss} loss, {accelerator.num_processes} "
        f"process(es), batch {config.train_batch_size} x {config.gradient_accumulation_steps} per process, "
        f"{config.max_train_steps} steps, mixed precision {accelerator.mixed_precision}."
    )
    return TrainingRun(config, accelerator, data, model, scheduler, loss_fn, optimizer, lr_scheduler, dataloader, ema, noise, updates_per_epoch, num_params)


def resume_training(run: TrainingRun, checkpoint: Optional[str]) -> None:
    """2. Model, optimiser, schedule, EMA and RNG states from `checkpoint`, then the step and the loss history."""
    run.global_step, run.history = restore_checkpoint(run.accelerator, checkpoint, run.parts, run.config.output_dir)
    run.resumed_from = checkpoint
    run.epoch = run.global_step // run.updates_per_epoch
    if checkpoint is None and run.config.resume_from_checkpoint == "latest":
        logger.info(f"No checkpoint in {run.config.output_dir} yet: starting a new run.")


def training_step(run: TrainingRun, batch) -> Optional[float]:
    """3. One micro-batch: loss, backward, and (after the last micro-batch of an update) clipping, the optimiser
    and EMA steps. Returns the update's loss averaged over micro-batches and processes, or None mid-accumulation."""
    accelerator, config = run.accelerator, run.config
    x0 = batch[0] if isinstance(batch, (list, tuple)) else batch
    with accelerator.accumulate(run.model):
        with accelerator.autocast():
            loss = run.loss_fn(run.model, x0, generator=run.noise).loss
        accelerator.backward(loss)
        if accelerator.sync_gradients and config.max_grad_norm > 0:
            accelerator.clip_grad_norm_(run.model.parameters(), config.max_grad_norm)
        run.optimizer.step()
        run.lr_scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
    run.running_loss += loss.detach().float()
    run.micro_batches += 1
    if not accelerator.sync_gradients:
        return None
    if run.ema is not None:
        run.ema.step(accelerator.unwrap_model(run.model).parameters())
    run.global_step += 1
    step_loss = float(accelerator.gather(run.running_loss.reshape(1) / run.micro_batches).mean())
    run.running_loss, run.micro_batches = 0.0, 0
    run.history.append([run.global_step, step_loss])
    return step_loss


def save_samples(run: TrainingRun, name: str) -> Optional[torch.Tensor]:
    """A sample grid of the EMA model at `name` in the run folder, also sent to the trackers (main process)."""
    if not run.accelerator.is_main_process:
        return None
    config, data = run.config, run.data
    with announced(run.accelerator, f"Step {run.global_step}: sampling {config.num_sample_images} images ({config.num_inference_steps} steps) into {name}"):
        with run.ema_weights() as model:
            progress = f"sampling {name}" if config.progress_bar else None
            samples = generate_samples(model, run.scheduler, data, config.num_sample_images, config.num_inference_steps, config.seed, progress)
        path = os.path.join(config.output_dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        reference = data.dataset[:2000][0] if not data.is_image and hasattr(data.dataset, "tensors") else None
        save_samples_figure(samples, path, data.data_range, reference=reference, title=f"step {run.global_step}")
        if data.is_image:
            log_images_to_trackers(run.accelerator, samples, data.data_range, run.global_step)
    return samples


def save_pipeline(run: TrainingRun) -> None:
    """The `ScoreSdePCPipeline` of the EMA weights into the run folder (main process)."""
    if run.accelerator.is_main_process:
        with run.ema_weights() as model:
            make_pipeline(model, run.scheduler, run.data).save_pretrained(run.config.output_dir)


def periodic_work(run: TrainingRun, step_loss: float) -> None:
    """4. After an update: log the loss, and on schedule write a checkpoint, a sample grid and the pipeline (never
    at the last step: `finish_training` does all three)."""
    config, step = run.config, run.global_step
    if step % config.log_every == 0 or step == config.max_train_steps:
        logs = {"loss": step_loss, "lr": run.lr_scheduler.get_last_lr()[0]}
        if run.ema is not None:
            logs["ema_decay"] = run.ema.cur_decay_value
        run.accelerator.log(logs, step=step)
    if step >= config.max_train_steps:
        return
    if step % config.checkpointing_steps == 0:
        checkpoint_now(run.accelerator, config.output_dir, step, run.training_state(), run.parts, config.checkpoints_total_limit)
    if config.sample_every and step % config.sample_every == 0:
        save_samples(run, os.path.join("samples", f"step-{step:07d}.png"))
    if config.save_pipeline_every and step % config.save_pipeline_every == 0:
        with announced(run.accelerator, f"Step {step}: writing the EMA pipeline into {config.output_dir}"):
            save_pipeline(run)


def training_loop(run: TrainingRun) -> None:
    """Updates until `max_train_steps`, one `global_step` per optimiser update (after gradient accumulation); a
    resumed run skips the batches of its epoch it had already seen."""
    accelerator, config = run.accelerator, run.config
    skip_batches = (run.global_step % run.updates_per_epoch) * config.gradient_accumulation_steps
    progress = progress_bar(accelerator, config.max_train_steps, run.global_step, config.progress_bar, "training")
    run.model.train()
    while run.global_step < config.max_train_steps:
        if hasattr(run.dataloader, "set_epoch"):
            run.dataloader.set_epoch(run.epoch)
        batches = accelerator.skip_first_batches(run.dataloader, skip_batches) if skip_batches else run.dataloader
        skip_batches = 0
        for batch in batches:
            step_loss = training_step(run, batch)
            if step_loss is None:
                continue
            progress.update(1)
            progress.set_postfix(loss=f"{step_loss:.4f}", lr=f"{run.lr_scheduler.get_last_lr()[0]:.2e}")
            periodic_work(run, step_loss)
            if run.global_step >= config.max_train_steps:
                break
        else:
            run.epoch += 1
    progress.close()


def finish_training(run: TrainingRun) -> Optional[torch.Tensor]:
    """5. A last checkpoint, the EMA pipeline, the sample grid, the loss curve, the model card, the Hub upload."""
    accelerator, config = run.accelerator, run.config
    checkpoint_now(accelerator, config.output_dir, run.global_step, run.training_state(), run.parts, config.checkpoints_total_limit)
    samples = None
    if accelerator.is_main_process:
        save_pipeline(run)
        model_class = type(accelerator.unwrap_model(run.model)).__name__
        card_config = {**config.to_dict(), "model_class": f"{model_class} ({run.num_params / 1e6:.2f}M parameters)"}
        samples = save_samples(run, GRID_FILENAME)
        save_loss_plot(run.history, os.path.join(config.output_dir, LOSS_PLOT_FILENAME), title=f"{config.loss} loss, {config.sde} SDE, {run.data.name}")
        with open(os.path.join(config.output_dir, LOSS_HISTORY_FILENAME), "w", encoding="utf-8") as f:
            f.write("step,loss\n" + "".join(f"{int(s)},{l:.6g}\n" for s, l in run.history))
        from .hub import push_to_hub, save_model_card

        sde_info = {"name": config.sde, "config": run.scheduler.sde.get_config()}
        scheduler_config = dict(run.scheduler.config)
        if config.push_to_hub:
            with announced(accelerator, f"Uploading {config.output_dir} to the Hub"):
                repo_id = push_to_hub(config.output_dir, card_config, sde_info, config.hub_model_id, config.hub_token, config.hub_private, GRID_FILENAME, scheduler_config)
            logger.info(f"Pushed {config.output_dir} to the Hub as {repo_id}.")
        else:
            save_model_card(config.output_dir, card_config, sde_info, repo_id=None, grid_filename=GRID_FILENAME, scheduler_config=scheduler_config)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return samples


def train(config: Optional[TrainingConfig] = None, **overrides) -> TrainingResult:
    """Train a score model as `config` says (a `TrainingConfig`, or its fields as keyword arguments): set up,
    resume, the training loop, the final save and upload.

    Example (a few steps on the 2-D four-Gaussian mixture):

    >>> import tempfile
    >>> from scoresde_diffusers.training import TrainingConfig, train
    >>> out = tempfile.mkdtemp()
    >>> result = train(TrainingConfig(output_dir=out, dataset="four_gaussians", num_samples=256, train_batch_size=64,
    ...                               max_train_steps=4, checkpointing_steps=2, sample_every=0, num_sample_images=16,
    ...                               num_inference_steps=10, report_to="none", progress_bar=False))
    >>> result.global_step
    4
    """
    if config is None:
        config = TrainingConfig(**overrides)
    elif overrides:
        config = TrainingConfig(**{**config.to_dict(), **overrides})
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    # Fail on a bad --resume_from_checkpoint before any work.
    checkpoint = resolve_checkpoint(config.output_dir, config.resume_from_checkpoint)
    with DiscardIfFailed(config.output_dir) as guard:
        run = setup_training(config)
        guard.accelerator = run.accelerator
        resume_training(run, checkpoint)
        start = time.time()
        training_loop(run)
        elapsed = time.time() - start
        samples = finish_training(run)
    if run.accelerator.is_main_process:
        logger.info(f"Done: {run.global_step} steps in {elapsed:.0f} s; pipeline, {GRID_FILENAME} and {LOSS_PLOT_FILENAME} in {config.output_dir}.")
    return TrainingResult(output_dir=config.output_dir, global_step=run.global_step, loss_history=run.history, resumed_from=checkpoint, samples=samples)


__all__ = [
    "CheckpointError",
    "TrainingResult",
    "TrainingRun",
    "build_model_and_scheduler",
    "build_scheduler",
    "finish_training",
    "generate_samples",
    "periodic_work",
    "resume_training",
    "save_pipeline",
    "setup_training",
    "train",
    "training_loop",
    "training_step",
]
