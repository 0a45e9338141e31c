"""Model card and Hub upload of a trained pipeline, the way diffusers' training examples do it.

`create_repo` and `upload_folder` are imported into this module's namespace on purpose: tests replace them here
(``monkeypatch.setattr(scoresde_diffusers.training.hub, "upload_folder", fake)``) to check the calls offline.
"""

import json
import os
from typing import Optional

from diffusers.utils.hub_utils import MODEL_CARD_TEMPLATE_PATH, load_or_create_model_card, populate_model_card
from huggingface_hub import ModelCard, ModelCardData, create_repo, upload_folder

#: Files of the run folder that are not part of the published pipeline.
IGNORE_PATTERNS = ["checkpoint-*", ".tmp-*", "logs/*", "samples/*", "*.csv"]


#: Readable names of the registered predictors and correctors (others: the name with spaces).
_STEP_NAMES = {
    "euler_maruyama": "Euler-Maruyama",
    "reverse_diffusion": "reverse diffusion",
    "ancestral_sampling": "ancestral sampling",
    "langevin": "Langevin",
    "ald": "annealed Langevin dynamics",
}


def describe_sampler(scheduler_config: dict) -> str:
    """What a saved score-SDE scheduler runs, named by its steps: ``"Euler-Maruyama (no corrector)"`` rather than
    "PC" when there is no corrector, ``"predictor-corrector: reverse diffusion + Langevin (snr 0.16)"`` otherwise
    (Song et al. 2021, Section 4.2, Algorithms 2-3)."""
    predictor = scheduler_config.get("predictor") or "none"
    corrector = scheduler_config.get("corrector") or "none"
    predictor_name = _STEP_NAMES.get(predictor, predictor.replace("_", " "))
    if corrector == "none":
        return f"{predictor_name} (no corrector)"
    corrector_name = _STEP_NAMES.get(corrector, corrector.replace("_", " "))
    if predictor == "none":
        return f"{corrector_name} only (no predictor, snr {scheduler_config.get('snr')})"
    return f"predictor-corrector: {predictor_name} + {corrector_name} (snr {scheduler_config.get('snr')})"


def model_card_description(
    config: dict, sde: dict, grid_filename: Optional[str] = None, repo_id: Optional[str] = None, scheduler_config: Optional[dict] = None
) -> str:
    """The markdown body of the model card: what was trained on what, how to sample, and the training arguments."""
    repo = repo_id or config["output_dir"]
    sampler = describe_sampler(scheduler_config) if scheduler_config is not None else None
    model = config.get("model_class") or config["model"]
    lines = [
        f"# Score-based generative model ({sde['name'].upper()} SDE) trained on `{config['dataset']}`",
        "",
        "Score-based generative modelling through SDEs (Song et al., ICLR 2021), trained with the "
        "`examples/train.py` script of `scoresde_diffusers`.",
        "",
        f"- **Dataset:** `{config['dataset']}`",
        f"- **SDE:** `{sde['name']}` with {', '.join(f'{k}={v}' for k, v in sde['config'].items())}",
        f"- **Loss:** `{config['loss']}` (eps={config['train_eps']}, reduce_mean={config['reduce_mean']})",
        f"- **Model:** `{model}`; the weights are the EMA (decay {config['ema_decay']})" if config.get("use_ema") else f"- **Model:** `{model}`",
        f"- **Steps:** {config['max_train_steps']} at batch size {config['train_batch_size']}, learning rate {config['learning_rate']}",
        *([f"- **Sampler:** {sampler}, the saved scheduler's default (`ScoreSdePCPipeline` runs it)"] if sampler else []),
        "",
        "## Usage",
        "",
        "With `scoresde_diffusers` installed, diffusers' generic loader builds the pipeline (its `pipeline.py` is a "
        "one-line import of the class from that library, hence `trust_remote_code=True`):",
        "",
        "```python",
        "from diffusers import DiffusionPipeline",
        "",
        f'pipe = DiffusionPipeline.from_pretrained("{repo}", trust_remote_code=True)',
        f"images = pipe(batch_size=16, num_inference_steps={config.get('num_inference_steps', 500)}).images",
        "```",
        "",
        "or, without running any file of the repository:",
        "",
        "```python",
        "from scoresde_diffusers.pipelines.score_sde_pc import ScoreSdePCPipeline",
        "",
        f'pipe = ScoreSdePCPipeline.from_pretrained("{repo}")',
        "```",
        "",
    ]
    if grid_filename:
        steps = config.get("num_inference_steps")
        lines += ["## Samples", "", f"![samples]({grid_filename})", ""]
        if sampler:
            lines += [f"{sampler}, {steps} steps, EMA weights.", ""]
    lines += ["## Training arguments", "", "```json", json.dumps(config, indent=2, sort_keys=True, default=str), "```", ""]
    return "\n".join(lines)


def save_model_card(
    output_dir: str,
    config: dict,
    sde: dict,
    repo_id: Optional[str] = None,
    grid_filename: Optional[str] = None,
    token: Optional[str] = None,
    scheduler_config: Optional[dict] = None,
):
    """Write ``README.md`` into `output_dir` with diffusers' `load_or_create_model_card` / `populate_model_card`.

    Args:
        output_dir (`str`): the pipeline folder.
        config (`dict`): the training arguments (`TrainingConfig.to_dict()`).
        sde (`dict`): ``{"name": ..., "config": {...}}`` of the SDE.
        repo_id (`str`, *optional*): the Hub repo the card is for (an existing card is looked up there first, as
            diffusers does). Without it the card is made locally from diffusers' template, with no network access.
        grid_filename (`str`, *optional*): a sample grid in `output_dir` to show in the card.
        scheduler_config (`dict`, *optional*): the saved scheduler's config, to name the sampler it runs.
    """
    description = model_card_description(config, sde, grid_filename, repo_id, scheduler_config)
    if repo_id is not None:
        card = load_or_create_model_card(
            repo_id_or_path=repo_id, token=token, from_training=True, license="apache-2.0", model_description=description, inference=True
        )
    else:
        # A local run: the card diffusers' helper would create, without asking the Hub for an existing one.
        card_data = ModelCardData(license="apache-2.0", library_name="diffusers", inference=True)
        card = ModelCard.from_template(card_data, template_path=MODEL_CARD_TEMPLATE_PATH, model_description=description)
    tags = ["diffusers", "unconditional-image-generation", "score-sde", f"{sde['name']}-sde", "scoresde_diffusers", f"dataset:{config['dataset']}"]
    card = populate_model_card(card, tags=tags)
    path = os.path.join(output_dir, "README.md")
    card.save(path)
    return path


def push_to_hub(
    output_dir: str,
    config: dict,
    sde: dict,
    hub_model_id: Optional[str] = None,
    token: Optional[str] = None,
    private: bool = False,
    grid_filename: Optional[str] = None,
    scheduler_config: Optional[dict] = None,
) -> str:
    """Create the Hub repo (if needed), write the model card and upload the pipeline folder; returns the repo id.

    Checkpoints, logs and intermediate grids stay local (`IGNORE_PATTERNS`).
    """
    repo_name = hub_model_id or os.path.basename(os.path.normpath(output_dir))
    repo_id = create_repo(repo_id=repo_name, exist_ok=True, token=token, private=private).repo_id
    save_model_card(output_dir, config, sde, repo_id=repo_id, grid_filename=grid_filename, token=token, scheduler_config=scheduler_config)
    upload_folder(
        repo_id=repo_id,
        folder_path=output_dir,
        commit_message="End of training",
        ignore_patterns=IGNORE_PATTERNS,
        token=token,
    )
    return repo_id
