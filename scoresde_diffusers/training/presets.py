"""`--preset <score_sde config>`: train the paper's exact network with the paper's hyper-parameters.

A preset is a score_sde config name (``vp/cifar10_ddpmpp_continuous``, ``ve/cifar10_ncsnpp_deep_continuous``, ...;
`scoresde_diffusers.models.score_sde_configs.SCORE_SDE_CONFIGS` lists them). It fixes the network (score_sde's
NCSN++ / DDPM++ / DDPM, `NCSNppModel` or `ScoreSdeDDPMModel`), the SDE and its parameters, how the model is called
(timestep map, prediction type), the data range (score_sde's ``data.centered``), the sampler, and the training
recipe of score_sde's ``configs/default_*_configs.py`` and of the config itself (Song et al. 2021, Appendix H):
Adam with learning rate 2e-4, 5000 warm-up steps, gradient clipping at 1, batch 128, EMA 0.9999 (0.999 for VE),
continuous DSM for continuous configs and score_sde's SMLD / DDPM losses for discrete ones, and its ``reduce_mean``
(True for VP and sub-VP, False for VE).

The preset's values replace only the options left at their defaults, so ``--preset X --width 8 --max_train_steps 2``
is a tiny-width smoke run of X, and a changed learning rate stays changed.
"""

import dataclasses
from typing import Any, Dict, Iterable

from ..models.score_sde_configs import ScoreSdeConfig, get_score_sde_config

#: score_sde's ``configs/default_cifar10_configs.py`` optimisation (the other data sets' defaults are the same).
PAPER_OPTIMISATION = {
    "train_batch_size": 128,
    "learning_rate": 2e-4,
    "lr_warmup_steps": 5000,
    "lr_scheduler": "constant_with_warmup",
    "adam_beta1": 0.9,
    "adam_epsilon": 1e-8,
    "adam_weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "ema_warmup": False,
}


def preset_values(preset: ScoreSdeConfig) -> Dict[str, Any]:
    """The `TrainingConfig` values of `preset`: its network, SDE, sampler and training recipe."""
    is_ve = preset.sde == "vesde"
    sde_name = preset.sde[: -len("sde")]  # score_sde's "vesde" / "vpsde" / "subvpsde" -> our "ve" / "vp" / "subvp"
    model = preset.model
    values = dict(
        PAPER_OPTIMISATION,
        sde=sde_name,
        num_train_timesteps=int(preset.sde_params["num_scales"]),
        loss="dsm" if preset.continuous else ("smld" if is_ve else "ddpm"),
        reduce_mean=not is_ve,
        ema_decay=0.999 if is_ve else 0.9999,
        width=int(model["nf"]),
        channel_mult=list(model["ch_mult"]),
        layers_per_block=int(model["num_res_blocks"]),
        attention_resolutions=list(model["attn_resolutions"]),
        dropout=float(model["dropout"]),
        predictor=preset.sampling["predictor"],
        corrector=preset.sampling["corrector"],
        snr=float(preset.sampling["snr"]),
    )
    for name in ("sigma_min", "sigma_max") if is_ve else ("beta_min", "beta_max"):
        values[name] = float(preset.sde_params[name])
    return values


def apply_preset(config, keep: Iterable[str] = ()):
    """`config` with the values of its ``preset`` in every option left at its default and not named in `keep` (the
    options given on the command line); unchanged without a preset, or once the preset is applied."""
    if config.preset is None or getattr(config, "_preset_applied", False):
        return config
    preset = get_score_sde_config(config.preset)
    keep = set(keep)
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory() for f in dataclasses.fields(config)}
    changes = {
        name: value
        for name, value in preset_values(preset).items()
        if name not in keep and _same(getattr(config, name), defaults[name])
    }
    applied = dataclasses.replace(config, **changes)
    object.__setattr__(applied, "_preset_applied", True)  # not a field: train() must not apply it a second time
    return applied


def _same(value, default) -> bool:
    as_list = (list, tuple)
    if isinstance(value, as_list) and isinstance(default, as_list):
        return list(value) == list(default)
    return value == default
