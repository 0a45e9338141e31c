"""The training loop: accelerate, Adam with warm-up, gradient clipping, EMA, atomic checkpoints, sample grids.

The shape follows diffusers' ``examples/unconditional_image_generation/train_unconditional.py``; what is ours is the
score-matching loss (`losses.py`), the score-SDE scheduler that the model is trained for, the atomic checkpoints
(`checkpointing.py`) and the final folder, a `ScoreSdePCPipeline` whose UNet holds the EMA weights. Sources of the
recipe: score_sde's ``run_lib.train`` and configs (Adam, lr 2e-4, warm-up, grad_clip 1, EMA), as in
Song et al. (2021), Appendix H (EMA 0.999/0.9999, sampling and training eps).

Multi-process: data is sharded by `accelerator.prepare`, every process computes the loss on its shard and the
gradients are averaged; only the main process writes sample grids, the final pipeline, the plots and the Hub
upload. Checkpoints (`checkpointing.py`: safetensors and JSON only, each process its RNG states) are switched in
atomically by the main process.
"""

import inspect
import logging
import os
import time
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data import TrainingData, load_training_data
from ..models.mlp import MLPScoreModel
from ..models.unet_presets import MODEL_PRESETS, PRESET_PARAMETRIZATION, create_unet
from .checkpointing import CheckpointError, CheckpointParts, load_checkpoint, resolve_checkpoint, save_checkpoint, write_json_atomic
from .config import TrainingConfig
from .losses import get_loss
from .plotting import save_loss_plot, save_samples_figure

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
def _scheduler_classes():
    from ..schedulers import SubVPSDEScheduler, VESDEScheduler, VPSDEScheduler

    return {"ve": VESDEScheduler, "vp": VPSDEScheduler, "subvp": SubVPSDEScheduler}


def build_scheduler(config: TrainingConfig, prediction_type: str, timestep_type: Optional[str]):
    """The score-SDE scheduler the model is trained for and sampled with (saved in the final pipeline)."""
    classes = _scheduler_classes()
    if config.sde not in classes:
        raise ValueError(f"Unknown SDE {config.sde!r} for training. Allowed: {', '.join(sorted(classes))}.")
    kwargs = {"num_train_timesteps": config.num_train_timesteps, "prediction_type": prediction_type}
    optional = {
        "timestep_type": timestep_type,
        "beta_min": config.beta_min,
        "beta_max": config.beta_max,
        "sigma_min": config.sigma_min,
        "sigma_max": config.sigma_max,
        "predictor": config.predictor,
        "corrector": config.corrector,
        "snr": config.snr,
        "sampling_eps": config.sampling_eps,
    }
    scheduler_class = classes[config.sde]
    accepted = set(inspect.signature(scheduler_class.__init__).parameters)
    for key, value in optional.items():
        if value is None:
            continue
        if key not in accepted:
            raise ValueError(f"--{key} does not apply to the {config.sde!r} SDE ({scheduler_class.__name__}).")
        kwargs[key] = value
    return scheduler_class(**kwargs)


def build_model_and_scheduler(config: TrainingConfig, data: TrainingData):
    """The score model and its scheduler, chosen together so the model's conditioning matches the timestep map."""
    model_name = config.model
    if model_name == "auto":
        model_name = ("ncsnpp" if config.sde == "ve" else "ddpmpp") if data.is_image else "mlp"
    if data.is_image and model_name == "mlp":
        raise ValueError(f"The mlp model is for vector data; {data.name!r} holds images of shape {data.sample_shape}. Use a UNet preset ({', '.join(MODEL_PRESETS.names())}).")
    if not data.is_image and model_name != "mlp":
        raise ValueError(f"{data.name!r} holds vectors of shape {data.sample_shape}; use --model mlp (or auto), not {model_name!r}.")

    if model_name == "mlp":
        fourier = config.sde == "ve" or config.timestep_type == "sigma"
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
            defaults = PRESET_PARAMETRIZATION.get(model_name, {"prediction_type": "epsilon", "timestep_type": None})
        prediction_type = config.prediction_type or defaults["prediction_type"]
        timestep_type = config.timestep_type or defaults["timestep_type"]
        if fourier and (timestep_type or "sigma") != "sigma":
            raise ValueError(
                f"A UNet with Fourier time embedding takes log of its timestep and divides its output by it: it must be "
                f"called with sigma(t) > 0, i.e. timestep_type='sigma', not {timestep_type!r}."
            )
    scheduler = build_scheduler(config, prediction_type, timestep_type)
    return model, scheduler


def make_pipeline(model, scheduler, data_range):
    from ..pipelines.score_sde_pc import ScoreSdePCPipeline

    pipeline = ScoreSdePCPipeline(unet=model, scheduler=scheduler, data_range=tuple(data_range))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@torch.no_grad()
def generate_samples(model, scheduler, data: TrainingData, num_samples: int, num_inference_steps: int, seed: int) -> torch.Tensor:
    """Samples of the model with the PC pipeline (the caller puts the EMA weights in place)."""
    was_training = model.training
    model.eval()
    try:
        pipeline = make_pipeline(model, scheduler, data.data_range)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        samples = pipeline(batch_size=num_samples, num_inference_steps=num_inference_steps, generator=generator, output_type="pt").images
    finally:
        model.train(was_training)
    return samples.float().cpu()


def _tracker_config(config: TrainingConfig) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in config.to_dict().items()}


def _log_with(report_to: str):
    if report_to in (None, "", "none"):
        return None
    if report_to == "wandb":
        from accelerate.utils import is_wandb_available

        if not is_wandb_available():
            raise ValueError("--report_to wandb needs `pip install wandb`; use tensorboard or none.")
    return report_to


# ---------------------------------------------------------------------------------------------- the loop
def train(config: Optional[TrainingConfig] = None, **overrides) -> TrainingResult:
    """Train a score model as `config` says (a `TrainingConfig`, or its fields as keyword arguments).

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
    output_dir = config.output_dir
    # Several processes started by torchrun (what `accelerate launch --multi_gpu` runs) on a machine without CUDA:
    # accelerate only forms a CPU (gloo) process group when told `cpu=True`; otherwise each process would train
    # alone and they would all write the same folder.
    several_processes = int(os.environ.get("WORLD_SIZE", "1")) > 1
    # accelerate keeps its state in process-wide singletons; a second `train` in one process (a notebook, the tests)
    # may ask for another mixed precision or accumulation, so start from a fresh state (the process group stays).
    AcceleratorState._reset_state()
    GradientState._reset_state()
    accelerator = Accelerator(
        cpu=config.cpu or (several_processes and not torch.cuda.is_available()),
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        log_with=_log_with(config.report_to),
        project_config=ProjectConfiguration(project_dir=output_dir, logging_dir=os.path.join(output_dir, config.logging_dir)),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    if accelerator.is_main_process:
        os.makedirs(output_dir, exist_ok=True)
    # Fail on a bad --resume_from_checkpoint before any work (nothing is written yet).
    checkpoint = resolve_checkpoint(output_dir, config.resume_from_checkpoint)

    # 1. Data, model, scheduler, loss: same seed everywhere so every process builds the same initial weights.
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
    )
    model, scheduler = build_model_and_scheduler(config, data)
    loss_fn = get_loss(config.loss, scheduler, reduce_mean=config.reduce_mean, eps=config.train_eps)

    # 2. Optimiser, warm-up schedule, EMA.
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_epsilon,
        weight_decay=config.adam_weight_decay,
    )
    lr_scheduler = get_scheduler(
        config.lr_scheduler,
        optimizer=optimizer,
        # the prepared schedule steps once per process per update (accelerate), hence the factor
        num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=config.max_train_steps * accelerator.num_processes,
    )
    ema = None
    if config.use_ema:
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
    if len(data.dataset) < config.train_batch_size * accelerator.num_processes:
        raise ValueError(
            f"The data set has {len(data.dataset)} items, fewer than one batch per process "
            f"({config.train_batch_size} x {accelerator.num_processes}); lower --train_batch_size."
        )
    dataloader = DataLoader(data.dataset, batch_size=config.train_batch_size, shuffle=True, drop_last=True, num_workers=config.dataloader_num_workers)
    model, optimizer, dataloader, lr_scheduler = accelerator.prepare(model, optimizer, dataloader, lr_scheduler)
    if ema is not None:
        ema.to(accelerator.device)
    # A dedicated generator of the training times and noise, rather than the global RNG, makes a resumed run draw
    # exactly the noise of an uninterrupted one: the global RNG is also consumed by things a resume does differently
    # (creating a data loader iterator draws a base seed from it). Different noise on every process (their data
    # shards differ too).
    noise = torch.Generator(device=accelerator.device).manual_seed(config.seed + 1_000_003 * accelerator.process_index)
    parts = CheckpointParts(model=model, optimizer=optimizer, lr_scheduler=lr_scheduler, ema=ema, generators={"noise": noise})

    if accelerator.is_main_process:
        accelerator.init_trackers("score_sde_training", config=_tracker_config(config))
        write_json_atomic(os.path.join(output_dir, "training_config.json"), config.to_dict())

    num_params = sum(p.numel() for p in model.parameters())
    updates_per_epoch = max(1, len(dataloader) // config.gradient_accumulation_steps)
    logger.info(
        f"Training {type(accelerator.unwrap_model(model)).__name__} ({num_params / 1e6:.2f}M parameters) on {data.name} "
        f"{data.sample_shape} x {len(data.dataset)}, {config.sde} SDE, {config.loss} loss, {accelerator.num_processes} "
        f"process(es), batch {config.train_batch_size} x {config.gradient_accumulation_steps} per process, {config.max_train_steps} steps."
    )

    # 3. Resume: model, optimiser, schedule, EMA and RNG states, then the step and the loss history.
    global_step, history = 0, []
    if checkpoint is not None:
        state = load_checkpoint(accelerator, checkpoint, parts, output_dir)
        global_step = int(state["step"])
        history = [list(h) for h in state.get("loss_history", []) if h[0] <= global_step]
        logger.info(f"Resumed from {checkpoint} at step {global_step}.")
    elif config.resume_from_checkpoint == "latest":
        logger.info(f"No checkpoint in {output_dir} yet: starting a new run.")

    def training_state(epoch: int) -> dict:
        return {
            "step": global_step,
            "epoch": epoch,
            "num_processes": accelerator.num_processes,
            "batches_per_epoch_per_process": len(dataloader),
            "loss_history": history,
            "config": config.to_dict(),
        }

    def save_samples(name: str):
        if not accelerator.is_main_process:
            return None
        unwrapped = accelerator.unwrap_model(model)
        if ema is not None:
            ema.store(unwrapped.parameters())
            ema.copy_to(unwrapped.parameters())
        try:
            samples = generate_samples(unwrapped, scheduler, data, config.num_sample_images, config.num_inference_steps, config.seed)
        finally:
            if ema is not None:
                ema.restore(unwrapped.parameters())
        os.makedirs(os.path.dirname(os.path.join(output_dir, name)), exist_ok=True)
        reference = data.dataset[:2000][0] if not data.is_image and hasattr(data.dataset, "tensors") else None
        save_samples_figure(samples, os.path.join(output_dir, name), data.data_range, reference=reference, title=f"step {global_step}")
        return samples

    # 4. The loop: one `global_step` per optimiser update (after gradient accumulation).
    epoch = global_step // updates_per_epoch
    skip_batches = (global_step % updates_per_epoch) * config.gradient_accumulation_steps
    progress = tqdm(total=config.max_train_steps, initial=global_step, disable=not (accelerator.is_local_main_process and config.progress_bar), desc="training")
    model.train()
    running, micro = 0.0, 0
    start = time.time()
    while global_step < config.max_train_steps:
        if hasattr(dataloader, "set_epoch"):
            dataloader.set_epoch(epoch)
        batches = accelerator.skip_first_batches(dataloader, skip_batches) if skip_batches else dataloader
        skip_batches = 0
        for batch in batches:
            x0 = batch[0] if isinstance(batch, (list, tuple)) else batch
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    loss = loss_fn(model, x0, generator=noise).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            running += loss.detach().float()
            micro += 1
            if not accelerator.sync_gradients:
                continue
            # One update done.
            if ema is not None:
                ema.step(accelerator.unwrap_model(model).parameters())
            global_step += 1
            step_loss = float(accelerator.gather(running.reshape(1) / micro).mean())
            running, micro = 0.0, 0
            history.append([global_step, step_loss])
            lr = lr_scheduler.get_last_lr()[0]
            progress.update(1)
            progress.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}")
            if global_step % config.log_every == 0 or global_step == config.max_train_steps:
                logs = {"loss": step_loss, "lr": lr}
                if ema is not None:
                    logs["ema_decay"] = ema.cur_decay_value
                accelerator.log(logs, step=global_step)
            if global_step % config.checkpointing_steps == 0 and global_step < config.max_train_steps:
                save_checkpoint(accelerator, output_dir, global_step, training_state(epoch), parts, config.checkpoints_total_limit)
            if config.sample_every and global_step % config.sample_every == 0 and global_step < config.max_train_steps:
                save_samples(os.path.join("samples", f"step-{global_step:07d}.png"))
            if global_step >= config.max_train_steps:
                break
        else:
            epoch += 1
            continue
        break
    progress.close()
    elapsed = time.time() - start

    # 5. The end: a last checkpoint, the EMA pipeline, the sample grid, the loss curve, the card, the Hub.
    save_checkpoint(accelerator, output_dir, global_step, training_state(epoch), parts, config.checkpoints_total_limit)
    samples = None
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        if ema is not None:
            ema.store(unwrapped.parameters())
            ema.copy_to(unwrapped.parameters())
        make_pipeline(unwrapped, scheduler, data.data_range).save_pretrained(output_dir)
        if ema is not None:
            ema.restore(unwrapped.parameters())
        samples = save_samples(GRID_FILENAME)
        save_loss_plot(history, os.path.join(output_dir, LOSS_PLOT_FILENAME), title=f"{config.loss} loss, {config.sde} SDE, {data.name}")
        with open(os.path.join(output_dir, LOSS_HISTORY_FILENAME), "w", encoding="utf-8") as f:
            f.write("step,loss\n" + "".join(f"{int(s)},{l:.6g}\n" for s, l in history))
        from .hub import push_to_hub, save_model_card

        sde_info = {"name": config.sde, "config": scheduler.sde.get_config()}
        card_config = {**config.to_dict(), "model_class": f"{type(unwrapped).__name__} ({num_params / 1e6:.2f}M parameters)"}
        if config.push_to_hub:
            repo_id = push_to_hub(output_dir, card_config, sde_info, config.hub_model_id, config.hub_token, config.hub_private, GRID_FILENAME)
            logger.info(f"Pushed {output_dir} to the Hub as {repo_id}.")
        else:
            save_model_card(output_dir, card_config, sde_info, repo_id=None, grid_filename=GRID_FILENAME)
        logger.info(f"Done: {global_step} steps in {elapsed:.0f} s; pipeline, {GRID_FILENAME} and {LOSS_PLOT_FILENAME} in {output_dir}.")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainingResult(output_dir=output_dir, global_step=global_step, loss_history=history, resumed_from=checkpoint, samples=samples)


__all__ = ["CheckpointError", "TrainingResult", "build_model_and_scheduler", "build_scheduler", "generate_samples", "train"]
