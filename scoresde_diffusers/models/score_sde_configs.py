"""score_sde_pytorch's configs as data: which network, SDE, sampler and data range each checkpoint was trained with.

`SCORE_SDE_CONFIGS` maps each config name of score_sde_pytorch's ``configs/`` folder that uses the NCSN++/DDPM++
(``ncsnpp``) or DDPM (``ddpm``) network to a `ScoreSdeConfig`. The values are those of the config files (Song et
al. 2021, Appendix H, Table 2/3 settings). `CHECKPOINT_ALIASES` maps the folder names of the released checkpoints
(score_sde_pytorch's README) where they differ from the config name. NCSN / NCSNv2 configs are left out: no
checkpoint was released for them.

How score_sde calls its networks (``models/utils.py``, ``get_score_fn``), which is what the scheduler's
``timestep_type`` and ``prediction_type`` reproduce:

| SDE              | training   | model input (label)          | our ``timestep_type`` | output          | ``prediction_type`` |
|------------------|------------|------------------------------|-----------------------|-----------------|---------------------|
| VE               | continuous | sigma(t)                     | ``sigma``             | score           | ``score``           |
| VE               | discrete   | round((1 - t) (N - 1))       | ``noise_level_index`` | score           | ``score``           |
| VP, sub-VP       | continuous | 999 t                        | ``scaled``            | -sigma x score  | ``epsilon``         |
| VP               | discrete   | t (N - 1)                    | ``scaled``            | -sigma x score  | ``epsilon``         |

(score_sde's continuous models always use 999 t; every VP and sub-VP config here has N = 1000, where t (N - 1) is
999 t. For discrete VE the scheduler passes (1 - t)(N - 1), an invertible map, and the network rounds it.)
A discrete VP model's output is divided by DDPM's discrete sqrt(1 - alpha_bar) at index floor(t (N - 1)) in
score_sde and by the continuous sigma(t) here; the two agree to 0.35% from t = 0.1 on (see
`scoresde_diffusers.sampling.timesteps`).
"""

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple


SDE_SCHEDULERS = {"vesde": "VESDEScheduler", "vpsde": "VPSDEScheduler", "subvpsde": "SubVPSDEScheduler"}


@dataclass(frozen=True)
class ScoreSdeConfig:
    """One score_sde config: the network (`model_class` and its config), the SDE and sampler, the data.

    Args:
        name (`str`): the config's path in score_sde's ``configs/`` without ``.py``.
        model_class (`str`): ``"NCSNppModel"`` or ``"ScoreSdeDDPMModel"``.
        model (`dict`): the network's config (keys of the model class).
        sde (`str`): ``"vesde"``, ``"vpsde"`` or ``"subvpsde"``.
        continuous (`bool`): trained with continuous time (else on N discrete noise levels).
        sde_params (`dict`): sigma_min / sigma_max or beta_min / beta_max, and N (``num_scales``).
        sampling (`dict`): score_sde's PC settings: predictor, corrector, snr, n_steps_each.
        dataset (`str`): the training data.
        released (`bool`): a checkpoint of this config is in score_sde_pytorch's release.
    """

    name: str
    model_class: str
    model: Dict[str, Any]
    sde: str
    continuous: bool
    sde_params: Dict[str, float]
    sampling: Dict[str, Any]
    dataset: str
    released: bool = False
    paper: Dict[str, float] = field(default_factory=dict)

    @property
    def centered(self) -> bool:
        return bool(self.model.get("centered", False))

    @property
    def data_range(self) -> Tuple[float, float]:
        """Where the model's data lives: score_sde's ``data.centered`` means [-1, 1], otherwise [0, 1]."""
        return (-1.0, 1.0) if self.centered else (0.0, 1.0)

    @property
    def timestep_type(self) -> str:
        if self.sde == "vesde":
            return "sigma" if self.continuous else "noise_level_index"
        return "scaled"

    @property
    def prediction_type(self) -> str:
        return "score" if self.sde == "vesde" else "epsilon"

    @property
    def scheduler_class(self) -> str:
        return SDE_SCHEDULERS[self.sde]

    def scheduler_config(self) -> Dict[str, Any]:
        """The keyword arguments of our scheduler that reproduce score_sde's SDE, sampler and model call."""
        params = self.sde_params
        config = {
            "num_train_timesteps": int(params["num_scales"]),
            "snr": float(self.sampling["snr"]),
            "correct_steps": int(self.sampling["n_steps_each"]),
            "predictor": self.sampling["predictor"],
            "corrector": self.sampling["corrector"],
            "prediction_type": self.prediction_type,
            "timestep_type": self.timestep_type,
        }
        if self.sde == "vesde":
            config.update(sigma_min=float(params["sigma_min"]), sigma_max=float(params["sigma_max"]), sampling_eps=1e-5)
        else:
            config.update(beta_min=float(params["beta_min"]), beta_max=float(params["beta_max"]), sampling_eps=1e-3)
        return config


# ---------------------------------------------------------------------------------------------------- builders
_CIFAR_SDE = {"sigma_min": 0.01, "sigma_max": 50.0, "beta_min": 0.1, "beta_max": 20.0, "num_scales": 1000}
_VE_PC = {"predictor": "reverse_diffusion", "corrector": "langevin", "snr": 0.16, "n_steps_each": 1}
_VP_EM = {"predictor": "euler_maruyama", "corrector": "none", "snr": 0.16, "n_steps_each": 1}
_VP_ANCESTRAL = {"predictor": "ancestral_sampling", "corrector": "none", "snr": 0.16, "n_steps_each": 1}

# NCSN++ as in configs/*/cifar10_ncsnpp*.py; DDPM++ switches off FIR and the input pyramid.
_NCSNPP_CIFAR = dict(
    sample_size=32, in_channels=3, nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=4, attn_resolutions=(16,), dropout=0.1,
    resamp_with_conv=True, conditional=True, fir=True, fir_kernel=(1, 3, 3, 1), skip_rescale=True, resblock_type="biggan",
    progressive="none", progressive_input="residual", progressive_combine="sum", embedding_type="fourier", init_scale=0.0,
    fourier_scale=16.0, scale_by_sigma=True, nonlinearity="swish", centered=False,
)
_DDPMPP_CIFAR = dict(_NCSNPP_CIFAR, fir=False, progressive_input="none", embedding_type="positional", scale_by_sigma=False, centered=True)
# The high-resolution VE models (configs/ve/*_256_ncsnpp_continuous.py and the LSUN ones): output and input skips.
_NCSNPP_256 = dict(
    _NCSNPP_CIFAR, sample_size=256, ch_mult=(1, 1, 2, 2, 2, 2, 2), num_res_blocks=2, dropout=0.0,
    progressive="output_skip", progressive_input="input_skip",
)
_NCSNPP_1024 = dict(_NCSNPP_256, sample_size=1024, nf=16, ch_mult=(1, 2, 4, 8, 16, 32, 32, 32), num_res_blocks=1)
_DDPM_CIFAR = dict(
    sample_size=32, in_channels=3, nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), dropout=0.1,
    resamp_with_conv=True, scale_by_sigma=False, nonlinearity="swish", centered=True,
)
_DDPM_256 = dict(_DDPM_CIFAR, sample_size=256, ch_mult=(1, 1, 2, 2, 4, 4), dropout=0.0)


def _entry(name, model_class, model, sde, continuous, sampling, dataset, released=False, paper=None, **sde_params):
    params = dict(_CIFAR_SDE, **sde_params)
    model = dict(model, sigma_min=params["sigma_min"], sigma_max=params["sigma_max"], num_scales=params["num_scales"])
    return ScoreSdeConfig(
        name=name, model_class=model_class, model=model, sde=sde, continuous=continuous, sde_params=params,
        sampling=dict(sampling), dataset=dataset, released=released, paper=dict(paper or {}),
    )


def _ncsnpp(name, model, sde, continuous, sampling, dataset="CIFAR10", released=False, paper=None, **sde_params):
    return _entry(name, "NCSNppModel", model, sde, continuous, sampling, dataset, released, paper, **sde_params)


def _ddpm(name, model, sde, continuous, sampling, dataset="CIFAR10", released=False, paper=None, **sde_params):
    return _entry(name, "ScoreSdeDDPMModel", model, sde, continuous, sampling, dataset, released, paper, **sde_params)


_deep = {"num_res_blocks": 8}
_positional = {"embedding_type": "positional"}
_vp_ncsnpp = dict(_NCSNPP_CIFAR, embedding_type="positional", scale_by_sigma=False, centered=True)
_HIGH_RES_PC = dict(_VE_PC, snr=0.075)

# Paper numbers: score_sde_pytorch's README table (Song et al. 2021, Table 3 FID/IS with the PC sampler; Table 2
# FID of the black-box ODE sampler and NLL in bits/dim on uniformly dequantised CIFAR-10 test data).
_CONFIGS = [
    _ncsnpp("ve/cifar10_ncsnpp", dict(_NCSNPP_CIFAR, **_positional), "vesde", False, _VE_PC, released=True, paper={"fid": 2.45, "inception_score": 9.73}),
    _ncsnpp("ve/cifar10_ncsnpp_continuous", _NCSNPP_CIFAR, "vesde", True, _VE_PC, released=True, paper={"fid": 2.38, "inception_score": 9.83}),
    _ncsnpp("ve/cifar10_ncsnpp_deep_continuous", dict(_NCSNPP_CIFAR, **_deep), "vesde", True, _VE_PC, released=True, paper={"fid": 2.20, "inception_score": 9.89}),
    _ddpm("ve/cifar10_ddpm", dict(_DDPM_CIFAR, scale_by_sigma=True, centered=False), "vesde", False, _VE_PC),
    _ncsnpp("ve/celeba_ncsnpp", dict(_NCSNPP_CIFAR, sample_size=64, **_positional), "vesde", False, dict(_VE_PC, snr=0.17), dataset="CELEBA", sigma_max=90.0),
    _ncsnpp("ve/celebahq_256_ncsnpp_continuous", _NCSNPP_256, "vesde", True, _HIGH_RES_PC, dataset="CelebAHQ", released=True, sigma_max=348.0, num_scales=2000),
    _ncsnpp("ve/ffhq_256_ncsnpp_continuous", _NCSNPP_256, "vesde", True, _HIGH_RES_PC, dataset="FFHQ", released=True, sigma_max=348.0, num_scales=2000),
    _ncsnpp("ve/bedroom_ncsnpp_continuous", _NCSNPP_256, "vesde", True, _HIGH_RES_PC, dataset="LSUN bedroom", released=True, sigma_max=378.0, num_scales=2000),
    _ncsnpp("ve/church_ncsnpp_continuous", _NCSNPP_256, "vesde", True, _HIGH_RES_PC, dataset="LSUN church_outdoor", released=True, sigma_max=380.0, num_scales=2000),
    _ncsnpp("ve/ffhq_ncsnpp_continuous", _NCSNPP_1024, "vesde", True, dict(_VE_PC, snr=0.15), dataset="FFHQ 1024", released=True, sigma_max=1348.0, num_scales=2000),
    _ncsnpp("ve/celebahq_ncsnpp_continuous", _NCSNPP_1024, "vesde", True, dict(_VE_PC, snr=0.15), dataset="CelebAHQ 1024", sigma_max=1348.0, num_scales=2000),
    _ncsnpp("vp/cifar10_ncsnpp", _vp_ncsnpp, "vpsde", False, dict(_VP_EM, predictor="reverse_diffusion")),
    _ncsnpp("vp/cifar10_ncsnpp_continuous", _vp_ncsnpp, "vpsde", True, _VP_EM),
    _ncsnpp("vp/cifar10_ncsnpp_deep_continuous", dict(_vp_ncsnpp, **_deep), "vpsde", True, _VP_EM),
    _ncsnpp("vp/cifar10_ddpmpp", _DDPMPP_CIFAR, "vpsde", False, _VP_ANCESTRAL, released=True, paper={"fid": 2.78, "inception_score": 9.64}),
    _ncsnpp("vp/cifar10_ddpmpp_continuous", _DDPMPP_CIFAR, "vpsde", True, _VP_EM, released=True, paper={"fid": 2.55, "inception_score": 9.58, "fid_ode": 3.93, "bits_per_dim": 3.16}),
    _ncsnpp("vp/cifar10_ddpmpp_deep_continuous", dict(_DDPMPP_CIFAR, **_deep), "vpsde", True, _VP_EM, released=True, paper={"fid": 2.41, "inception_score": 9.68, "fid_ode": 3.08, "bits_per_dim": 3.13}),
    _ddpm("vp/ddpm/cifar10", _DDPM_CIFAR, "vpsde", False, _VP_ANCESTRAL, released=True, paper={"fid": 3.24, "fid_ode": 3.37, "bits_per_dim": 3.28}),
    _ddpm("vp/ddpm/cifar10_continuous", _DDPM_CIFAR, "vpsde", True, _VP_EM, released=True, paper={"fid_ode": 3.69, "bits_per_dim": 3.21}),
    _ddpm("vp/ddpm/celebahq", _DDPM_256, "vpsde", False, dict(_VP_ANCESTRAL, snr=0.075), dataset="CelebAHQ"),
    _ddpm("vp/ddpm/bedroom", _DDPM_256, "vpsde", False, dict(_VP_ANCESTRAL, snr=0.075), dataset="LSUN bedroom"),
    _ddpm("vp/ddpm/church", _DDPM_256, "vpsde", False, dict(_VP_ANCESTRAL, snr=0.075), dataset="LSUN church_outdoor"),
    _ncsnpp("subvp/cifar10_ncsnpp_continuous", _vp_ncsnpp, "subvpsde", True, _VP_EM),
    _ncsnpp("subvp/cifar10_ncsnpp_deep_continuous", dict(_vp_ncsnpp, **_deep), "subvpsde", True, _VP_EM),
    _ncsnpp("subvp/cifar10_ddpmpp_continuous", _DDPMPP_CIFAR, "subvpsde", True, _VP_EM, released=True, paper={"fid": 2.61, "inception_score": 9.56, "fid_ode": 3.16, "bits_per_dim": 3.02}),
    _ncsnpp("subvp/cifar10_ddpmpp_deep_continuous", dict(_DDPMPP_CIFAR, **_deep), "subvpsde", True, _VP_EM, released=True, paper={"fid": 2.41, "inception_score": 9.57, "fid_ode": 2.92, "bits_per_dim": 2.99}),
    _ddpm("subvp/cifar10_ddpm_continuous", _DDPM_CIFAR, "subvpsde", True, _VP_EM, released=True, paper={"fid_ode": 3.56, "bits_per_dim": 3.05}),
]

#: Every supported score_sde config, by its name in score_sde_pytorch's ``configs/``.
SCORE_SDE_CONFIGS: Dict[str, ScoreSdeConfig] = {config.name: config for config in _CONFIGS}

#: Released checkpoint folders whose name is not their config's (score_sde_pytorch README).
CHECKPOINT_ALIASES: Dict[str, str] = {
    "vp/cifar10_ddpm": "vp/ddpm/cifar10",
    "vp/cifar10_ddpm_continuous": "vp/ddpm/cifar10_continuous",
    "ve/ffhq_1024_ncsnpp_continuous": "ve/ffhq_ncsnpp_continuous",
}


def get_score_sde_config(name: str) -> ScoreSdeConfig:
    """The `ScoreSdeConfig` called `name` (a config name or a released checkpoint folder name, with or without
    ``configs/`` and ``.py``); a ValueError listing the known names otherwise."""
    key = str(name).strip().strip("/")
    key = key[len("configs/"):] if key.startswith("configs/") else key
    key = key[: -len(".py")] if key.endswith(".py") else key
    key = CHECKPOINT_ALIASES.get(key, key)
    if key not in SCORE_SDE_CONFIGS:
        known = ", ".join(sorted(SCORE_SDE_CONFIGS))
        aliases = ", ".join(f"{alias} (= {target})" for alias, target in sorted(CHECKPOINT_ALIASES.items()))
        raise ValueError(f"Unknown score_sde config {name!r}. Known configs: {known}. Released checkpoint folder names: {aliases}.")
    return SCORE_SDE_CONFIGS[key]


def create_score_sde_model(config: ScoreSdeConfig, **overrides):
    """The network of `config` with random weights (`overrides` change its config, e.g. a tiny width for tests)."""
    from .ddpm_score_sde import ScoreSdeDDPMModel
    from .ncsnpp import NCSNppModel

    classes = {"NCSNppModel": NCSNppModel, "ScoreSdeDDPMModel": ScoreSdeDDPMModel}
    return classes[config.model_class](**dict(config.model, **overrides))


# ---------------------------------------------------------------------------------------------------- conversion
WEIGHT_CHOICES = ("ema", "model")


def load_score_sde_checkpoint(path: str) -> Dict[str, Any]:
    """A score_sde ``checkpoint_*.pth`` loaded as plain tensors and numbers (``torch.load(weights_only=True)``).

    A file that holds other Python objects is refused, since unpickling them could run code.
    """
    import pickle

    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{path} holds Python objects besides tensors ({first_line[:200]}), and loading those could run code, so "
            "it is refused. If you trust the file, re-save its tensors once: "
            "ckpt = torch.load(path, weights_only=False); "
            "torch.save({'model': ckpt['model'], 'ema': {'decay': float(ckpt['ema']['decay']), "
            "'num_updates': int(ckpt['ema']['num_updates']), 'shadow_params': list(ckpt['ema']['shadow_params'])}}, "
            "'checkpoint_tensors.pth')."
        ) from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        found = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"{path} is not a score_sde checkpoint: expected a dict with 'model' (and 'ema') states, found {found}.")
    return checkpoint


def _strip_prefix(state: Dict[str, Any]) -> Dict[str, Any]:
    # score_sde saves its network inside torch.nn.DataParallel, whose keys start with "module.".
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def _listing(keys, limit: int = 20) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def score_sde_state_dict(checkpoint: Dict[str, Any], model, weights: str = "ema", config_name: str = "?") -> Dict[str, Any]:
    """The state dict of our `model` from a score_sde `checkpoint`: its ``model`` state with the ``module.`` prefix
    removed and, for ``weights="ema"``, every trained parameter replaced by the EMA's ``shadow_params``, which
    score_sde stores in ``model.parameters()`` order, skipping the untrained ones (the Fourier frequencies).

    Raises a ValueError listing missing / unexpected / mis-shaped tensors and the config checked against.
    """
    check_choice_weights(weights)
    state = _strip_prefix(checkpoint["model"])
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or reshaped:
        problems = []
        if missing:
            problems.append(f"missing keys: {_listing(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {_listing(unexpected)}")
        if reshaped:
            problems.append(f"tensors of the wrong shape: {_listing(reshaped)}")
        raise ValueError(f"The checkpoint does not fit score_sde config {config_name!r}: " + "; ".join(problems) + ".")
    state = {k: state[k] for k in expected}
    if weights == "ema":
        if "ema" not in checkpoint:
            raise ValueError("The checkpoint has no 'ema' state; convert its raw weights with weights='model' (--weights model).")
        trained = {name for name, p in model.named_parameters() if p.requires_grad}
        # The checkpoint's own key order is score_sde's model.parameters() order.
        trained_keys = [k for k in _strip_prefix(checkpoint["model"]) if k in trained]
        shadow = list(checkpoint["ema"]["shadow_params"])
        if len(shadow) != len(trained_keys):
            raise ValueError(
                f"The checkpoint's EMA holds {len(shadow)} tensors but score_sde config {config_name!r} trains "
                f"{len(trained_keys)} parameters."
            )
        for key, value in zip(trained_keys, shadow):
            if tuple(value.shape) != tuple(state[key].shape):
                raise ValueError(
                    f"EMA tensor for {key} has shape {tuple(value.shape)}, expected {tuple(state[key].shape)} "
                    f"(score_sde config {config_name!r})."
                )
            state[key] = value
    return state


def check_choice_weights(weights: str) -> None:
    if weights not in WEIGHT_CHOICES:
        raise ValueError(f"weights must be one of {', '.join(map(repr, WEIGHT_CHOICES))}; got {weights!r}.")


def check_noise_levels(state: Dict[str, Any], model, config_name: str) -> None:
    """The checkpoint's ``sigmas`` buffer (score_sde's discrete noise levels) must be the config's: configs that
    share a network (e.g. the 256px VE ones) differ only in their SDE, which it records."""
    import torch

    theirs, ours = state["sigmas"].double().cpu(), model.sigmas.double().cpu()
    if theirs.shape != ours.shape or not torch.allclose(theirs, ours, rtol=1e-5):
        raise ValueError(
            f"The checkpoint's noise levels (sigmas: {theirs.numel()} levels from {float(theirs.max()):g} to "
            f"{float(theirs.min()):g}) are not those of score_sde config {config_name!r} ({ours.numel()} levels from "
            f"{float(ours.max()):g} to {float(ours.min()):g}): it was trained with another config."
        )


def convert_score_sde_model(checkpoint: Dict[str, Any], config: ScoreSdeConfig, weights: str = "ema", **model_overrides):
    """Our network for `config` (with `model_overrides`), holding a score_sde `checkpoint`'s weights, in eval mode."""
    model = create_score_sde_model(config, **model_overrides)
    state = score_sde_state_dict(checkpoint, model, weights=weights, config_name=config.name)
    check_noise_levels(state, model, config.name)
    model.load_state_dict(state)
    return model.eval()


def create_score_sde_scheduler(config: ScoreSdeConfig):
    """Our PC scheduler for `config`: its SDE parameters, sampler settings, timestep map and prediction type."""
    from .. import schedulers

    return getattr(schedulers, config.scheduler_class)(**config.scheduler_config())


def create_score_sde_pipeline(model, config: ScoreSdeConfig):
    """A `ScoreSdePCPipeline` of `model` with `config`'s scheduler and data range."""
    from ..pipelines import ScoreSdePCPipeline

    return ScoreSdePCPipeline(unet=model, scheduler=create_score_sde_scheduler(config), data_range=config.data_range)


def _sha256(path: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def score_sde_model_card(
    config: ScoreSdeConfig, checkpoint_path: str, checkpoint: Dict[str, Any], weights: str, repo_id: str,
    model_overrides: Optional[Dict[str, Any]] = None,
) -> str:
    """The README.md of a converted pipeline: where the weights came from and how to use them."""
    ema = checkpoint.get("ema") or {}
    step = checkpoint.get("step")
    step = int(step) if step is not None and not isinstance(step, dict) else None
    what = f"the EMA weights (decay {float(ema['decay']):g})" if weights == "ema" and "decay" in ema else "the raw (non-EMA) weights"
    sde_params = ", ".join(f"{k}={v:g}" for k, v in config.sde_params.items() if (k.startswith("sigma") if config.sde == "vesde" else not k.startswith("sigma")))
    paper = ", ".join(f"{k} {v:g}" for k, v in config.paper.items()) or "none reported for this config"
    lines = [
        "---",
        "library_name: diffusers",
        "license: apache-2.0",
        "tags: [score-sde, unconditional-image-generation, scoresde_diffusers]",
        "---",
        "",
        f"# score_sde `{config.name}` ({config.model_class}, {config.sde.upper()}), converted",
        "",
        "Weights of Song et al. (2021), *Score-Based Generative Modeling through Stochastic Differential Equations* "
        "(ICLR 2021), from the official score_sde_pytorch release (https://github.com/yang-song/score_sde_pytorch, "
        "Apache-2.0), converted with `scripts/convert_score_sde_checkpoint.py` of `scoresde_diffusers`.",
        "",
        f"- **Source checkpoint:** `{os.path.basename(checkpoint_path)}`"
        + (f" (training step {step})" if step is not None else "")
        + f", sha256 `{_sha256(checkpoint_path)}`",
        f"- **Config:** score_sde `configs/{config.name}.py`"
        + (f" with the network changed by {json.dumps(model_overrides, sort_keys=True)}" if model_overrides else "")
        + f"; data {config.dataset}, range {list(config.data_range)}",
        f"- **Weights:** {what}",
        f"- **SDE:** {config.sde} ({'continuous' if config.continuous else 'discrete'} training), {sde_params}",
        f"- **Scheduler:** `{config.scheduler_class}` with timestep_type `{config.timestep_type}`, prediction_type "
        f"`{config.prediction_type}`, predictor `{config.sampling['predictor']}`, corrector `{config.sampling['corrector']}`, "
        f"snr {config.sampling['snr']}",
        f"- **Paper numbers for this checkpoint (score_sde_pytorch README / Song et al. 2021, Tables 2-3):** {paper}",
        "",
        "## Usage",
        "",
        "```python",
        "from scoresde_diffusers import ScoreSdePCPipeline",
        "",
        f'pipe = ScoreSdePCPipeline.from_pretrained("{repo_id}")',
        f"images = pipe(batch_size=4, num_inference_steps={int(config.sde_params['num_scales'])}).images",
        "```",
        "",
        "The network reproduces score_sde's to float32 rounding (checked on random weights against the original "
        "code; see tests/test_conversion.py of scoresde_diffusers).",
        "",
    ]
    return "\n".join(lines)


def convert_score_sde_checkpoint(
    checkpoint_path: str, config_name: str, output_dir: str, weights: str = "ema", repo_id: Optional[str] = None,
    model_overrides: Optional[Dict[str, Any]] = None,
):
    """Convert a score_sde checkpoint into a `ScoreSdePCPipeline` folder (network, scheduler, data range, model
    card) at `output_dir`; returns the pipeline.

    Args:
        checkpoint_path (`str`): score_sde's ``checkpoint_*.pth``.
        config_name (`str`): its config (see `get_score_sde_config`).
        output_dir (`str`): where to save the pipeline.
        weights (`str`, defaults to ``"ema"``): ``"ema"`` or ``"model"`` (the raw weights).
        repo_id (`str`, *optional*): the name the model card's usage example loads (default: `output_dir`).
        model_overrides (`dict`, *optional*): network config values that differ from the config file's, for a
            model trained with command-line overrides (score_sde's ``--config.model.nf=64``), e.g. ``{"nf": 64}``.
    """
    check_choice_weights(weights)
    config = get_score_sde_config(config_name)
    unknown = sorted(set(model_overrides or {}) - set(config.model))
    if unknown:
        raise ValueError(f"Unknown model config keys {unknown} for {config.model_class}; allowed: {', '.join(sorted(config.model))}.")
    checkpoint = load_score_sde_checkpoint(checkpoint_path)
    model = convert_score_sde_model(checkpoint, config, weights=weights, **(model_overrides or {}))
    pipeline = create_score_sde_pipeline(model, config)
    pipeline.save_pretrained(output_dir)
    card = score_sde_model_card(config, checkpoint_path, checkpoint, weights, repo_id=repo_id or output_dir, model_overrides=model_overrides)
    with open(os.path.join(output_dir, "README.md"), "w", encoding="utf-8") as handle:
        handle.write(card)
    return pipeline
