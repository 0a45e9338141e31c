"""Make the exactness fixtures of tests/test_conversion.py from the original score_sde_pytorch networks.

Run by hand, with a checkout of https://github.com/yang-song/score_sde_pytorch and ``pip install ml_collections``::

    python scripts/make_conversion_fixtures.py /path/to/score_sde_pytorch

For each config below it builds score_sde's own network (``models/ncsnpp.py`` / ``models/ddpm.py``, from the
config file, shrunk to a tiny width), gives it random weights, and records, on fixed inputs and times, the labels
score_sde's ``get_score_fn`` passes the network, the network's raw output, and the score ``get_score_fn`` returns.
Only numbers are written (safetensors, no code, no pickles) under tests/fixtures/conversion/:

- ``weights_<n>.safetensors``: the network's parameters (float16 values, so the float32 network is exactly the
  one that ran), in the order of ``model.parameters()``; configs whose tiny networks have the same parameter
  shapes share one file.
- ``<config name with / as __>.safetensors``: the inputs ``x`` and ``t``, ``labels``, ``model_output``, ``score``;
  its metadata names the config and holds its full-size values (``score_sde_config``), the tiny overrides, the weights file, the buffers (score_sde's ``sigmas``, which
  a test rebuilds from the config with score_sde's formula) and the parameters score_sde does not train (so are
  not in its EMA's ``shadow_params``).
- ``full_size_state_dicts.json``: for every config of our table, the sha256 of the full-size original network's
  state-dict keys and shapes (in order), its number of tensors and of parameters.

score_sde's FIR op is a CUDA extension compiled at import; it is replaced here by the pure-torch
``upfirdn2d_native`` found in the same checkout's ``op/upfirdn2d.py`` (what score_sde itself runs on CPU tensors),
so the reference stays score_sde's own code. One call in score_sde's ``layerspp.Upsample`` (the non-FIR path) passes
``'nearest'`` where torch takes ``scale_factor`` and so raises; the script passes it as the mode it means (see
`fix_interpolate_call`). score_sde's FIR ``upsample_conv_2d`` (FIR with ``resblock_type="ddpm"`` or
``progressive="residual"``) reverses a tensor with a negative step, which torch rejects: no released config uses
it, and it is not among the fixtures.
"""

import argparse
import ast
import hashlib
import importlib
import json
import os
import sys
import types

import numpy as np
import torch
from safetensors.torch import save_file

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "tests", "fixtures", "conversion")

# Tiny versions of the architectures: 8x8 images, two resolution levels, attention at 4x4. "Deep" configs keep
# twice the residual blocks. DDPM's GroupNorm needs widths that are multiples of 32.
TINY_NCSNPP = {"nf": 8, "ch_mult": (1, 2), "num_res_blocks": 1, "attn_resolutions": (4,)}
TINY_DDPM = {"nf": 32, "ch_mult": (1, 1), "num_res_blocks": 1, "attn_resolutions": (4,)}
IMAGE_SIZE = 8

#: config name -> extra model overrides (beyond the tiny size). The first group is every released family; the
#: variants exercise the remaining code paths of NCSN++ that score_sde's PyTorch code can run.
FIXTURE_CONFIGS = {
    "ve/cifar10_ncsnpp": {},
    "ve/cifar10_ncsnpp_continuous": {},
    "ve/cifar10_ncsnpp_deep_continuous": {},
    "ve/celebahq_256_ncsnpp_continuous": {},
    "ve/ffhq_256_ncsnpp_continuous": {},
    "ve/bedroom_ncsnpp_continuous": {},
    "ve/church_ncsnpp_continuous": {},
    "ve/ffhq_ncsnpp_continuous": {},
    "ve/cifar10_ddpm": {},
    "vp/cifar10_ncsnpp_continuous": {},
    "vp/cifar10_ddpmpp": {},
    "vp/cifar10_ddpmpp_continuous": {},
    "vp/cifar10_ddpmpp_deep_continuous": {},
    "vp/ddpm/cifar10": {},
    "vp/ddpm/cifar10_continuous": {},
    "subvp/cifar10_ddpmpp_continuous": {},
    "subvp/cifar10_ddpmpp_deep_continuous": {},
    "subvp/cifar10_ddpm_continuous": {},
}
VARIANTS = {
    # DDPM-type residual blocks with plain resampling, an input pyramid concatenated in, a residual output pyramid
    # and no skip rescaling.
    "variant_ddpm_blocks_cat_residual": (
        "ve/cifar10_ncsnpp_continuous",
        {"resblock_type": "ddpm", "fir": False, "progressive": "residual", "progressive_input": "input_skip",
         "progressive_combine": "cat", "skip_rescale": False},
    ),
    # BigGAN blocks with FIR, input skip summed, output skip, ELU, unconditional.
    "variant_output_skip_elu_unconditional": (
        "ve/cifar10_ncsnpp_continuous",
        {"progressive": "output_skip", "progressive_input": "input_skip", "nonlinearity": "elu", "conditional": False,
         "scale_by_sigma": False},
    ),
}

def stub_cuda_op(checkout: str) -> None:
    """Install an ``op`` module whose ``upfirdn2d`` is the checkout's own ``upfirdn2d_native`` (its CPU path)."""
    source = open(os.path.join(checkout, "op", "upfirdn2d.py")).read()
    tree = ast.parse(source)
    native = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "upfirdn2d_native"]
    namespace = {"torch": torch, "F": torch.nn.functional}
    exec(compile(ast.Module(body=native, type_ignores=[]), "op/upfirdn2d.py", "exec"), namespace)
    upfirdn2d_native = namespace["upfirdn2d_native"]

    def upfirdn2d(input, kernel, up=1, down=1, pad=(0, 0)):
        return upfirdn2d_native(input, kernel, up, up, down, down, pad[0], pad[1], pad[0], pad[1])

    op = types.ModuleType("op")
    op.upfirdn2d = upfirdn2d
    sys.modules["op"] = op


def fix_interpolate_call(layerspp) -> None:
    """score_sde's ``layerspp.Upsample`` (no FIR) calls ``F.interpolate(x, (H * 2, W * 2), 'nearest')``, where
    torch reads the third positional argument as ``scale_factor`` and raises; the intent is ``mode='nearest'``.
    Give that module an ``F`` whose ``interpolate`` reads it so; nothing else changes."""
    functional = torch.nn.functional

    def interpolate(input, size=None, scale_factor=None, mode="nearest", *args, **kwargs):
        if isinstance(scale_factor, str):
            scale_factor, mode = None, scale_factor
        return functional.interpolate(input, size, scale_factor, mode, *args, **kwargs)

    shim = types.ModuleType("F")
    shim.__dict__.update({k: v for k, v in vars(functional).items() if not k.startswith("__")})
    shim.interpolate = interpolate
    layerspp.F = shim


def load_config(name: str, tiny: dict, overrides: dict):
    config = importlib.import_module("configs." + name.replace("/", ".")).get_config()
    config.device = torch.device("cpu")
    if tiny:
        config.data.image_size = IMAGE_SIZE
    for key, value in {**tiny, **overrides}.items():
        setattr(config.model, key, value)
    return config


def config_summary(config) -> dict:
    """The fields of a (full-size) score_sde config that our config table reproduces."""
    plain = (bool, int, float, str, tuple, list, type(None))
    return {
        section: {k: (list(v) if isinstance(v, tuple) else v) for k, v in config[section].items() if isinstance(v, plain)}
        for section in ("training", "sampling", "data", "model")
    }


def state_dict_signature(model: torch.nn.Module) -> dict:
    """The state dict's keys and shapes, in order, as a sha256 (plus counts to read)."""
    layout = [[key, list(value.shape)] for key, value in model.state_dict().items()]
    return {
        "sha256": hashlib.sha256(json.dumps(layout).encode()).hexdigest(),
        "num_tensors": len(layout),
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }


def build_sde(config):
    import sde_lib

    if config.training.sde == "vesde":
        return sde_lib.VESDE(config.model.sigma_min, config.model.sigma_max, config.model.num_scales)
    if config.training.sde == "vpsde":
        return sde_lib.VPSDE(config.model.beta_min, config.model.beta_max, config.model.num_scales)
    return sde_lib.subVPSDE(config.model.beta_min, config.model.beta_max, config.model.num_scales)


def randomise(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Random float16-representable weights of unit-ish scale everywhere: score_sde's init zeroes biases and
    makes each residual branch's last layer ~1e-10, under which most weights would not reach the output. The
    Gaussian Fourier frequencies keep score_sde's own draw (rounded to float16 too)."""
    norm_weights = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.GroupNorm)}
    with torch.no_grad():
        for param in model.parameters():
            noise = torch.randn(param.shape, generator=generator)
            if not param.requires_grad:
                value = param.clone()
            elif id(param) in norm_weights:
                value = 1.0 + 0.1 * noise
            elif param.ndim >= 2:
                # fan-in: conv / linear weights are (out, in, ...), NIN weights are (in, out)
                value = noise / np.sqrt(param[0].numel() if param.ndim != 2 or param.shape[0] != param.shape[1] else param.shape[1])
            else:
                value = 0.1 * noise
            param.copy_(value.half().float())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", help="path to a score_sde_pytorch checkout")
    parser.add_argument("--out", default=DEFAULT_OUT, help="output folder (default: tests/fixtures/conversion)")
    args = parser.parse_args()

    checkout = os.path.abspath(args.checkout)
    sys.path.insert(0, checkout)
    stub_cuda_op(checkout)
    from models import ddpm, layerspp, ncsnpp  # noqa: F401  (registers the networks)
    from models import utils as mutils
    from models.ema import ExponentialMovingAverage

    fix_interpolate_call(layerspp)

    os.makedirs(args.out, exist_ok=True)
    torch.set_grad_enabled(False)
    jobs = [(name, name, overrides) for name, overrides in FIXTURE_CONFIGS.items()]
    jobs += [(fixture, base, overrides) for fixture, (base, overrides) in VARIANTS.items()]
    weight_files = {}
    for fixture_name, config_name, overrides in jobs:
        seed = sum(map(ord, fixture_name))
        generator = torch.Generator().manual_seed(seed)
        probe = load_config(config_name, {}, {})
        tiny = TINY_DDPM if probe.model.name == "ddpm" else dict(TINY_NCSNPP)
        if probe.model.name == "ncsnpp" and probe.model.num_res_blocks == 8:
            tiny["num_res_blocks"] = 2
        config = load_config(config_name, tiny, overrides)
        torch.manual_seed(seed)
        model = mutils.get_model(config.model.name)(config)
        model.eval()

        signature = json.dumps([(k, list(p.shape)) for k, p in model.named_parameters()] + [config.model.embedding_type, config.model.name])
        if signature in weight_files:
            weights_name, params = weight_files[signature]
            with torch.no_grad():
                for p, value in zip(model.parameters(), params):
                    p.copy_(value)
        else:
            randomise(model, generator)
            weights_name = f"weights_{len(weight_files)}.safetensors"
            params = [p.detach().clone() for p in model.parameters()]
            weight_files[signature] = (weights_name, params)
            save_file(
                {f"module.{k}": p.detach().half().contiguous() for k, p in model.named_parameters()},
                os.path.join(args.out, weights_name),
                metadata={"parameter_order": json.dumps([f"module.{k}" for k, _ in model.named_parameters()])},
            )

        # score_sde's EMA holds the trainable parameters in model.parameters() order; restoring from it must give
        # back the weights (the fixtures' outputs are computed after this round trip).
        ema = ExponentialMovingAverage(model.parameters(), decay=0.9999)
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.zero_()
        ema.copy_to(model.parameters())

        sde = build_sde(config)
        score_fn = mutils.get_score_fn(sde, model, train=False, continuous=config.training.continuous)
        x = torch.rand((2, config.data.num_channels, IMAGE_SIZE, IMAGE_SIZE), generator=generator)
        if config.data.centered:
            x = 2 * x - 1
        t = torch.tensor([0.07, 0.63], dtype=torch.float32)
        captured = {}

        def hook(module, inputs, output):
            captured["labels"], captured["output"] = inputs[1], output

        handle = model.register_forward_hook(hook)
        score = score_fn(x, t)
        handle.remove()

        # The state dict is score_sde's: its buffers ("sigmas", float64, computed from the config by score_sde's
        # get_sigmas) first, then the parameters in the weights file's order; score_sde's EMA holds the trainable
        # ones in that order (the Fourier frequencies W are not trained).
        buffers = [f"module.{k}" for k, _ in model.named_buffers()]
        parameters = [f"module.{k}" for k, _ in model.named_parameters()]
        if [f"module.{k}" for k in model.state_dict()] != buffers + parameters:
            raise RuntimeError(f"{fixture_name}: unexpected state-dict order")
        tensors = dict(x=x, t=t, labels=captured["labels"], model_output=captured["output"].float(), score=score.float())
        tensors = {k: v.detach().clone().contiguous() for k, v in tensors.items()}
        metadata = {
            "config_name": config_name,
            "score_sde_config": json.dumps(config_summary(probe)),
            "model_overrides": json.dumps({**tiny, **overrides, "sample_size": IMAGE_SIZE}),
            "weights_file": weights_name,
            "buffers": json.dumps({k: str(v.dtype).replace("torch.", "") for k, v in zip(buffers, model.buffers())}),
            "untrained_parameters": json.dumps([f"module.{k}" for k, p in model.named_parameters() if not p.requires_grad]),
            "source": "score_sde_pytorch models/%s.py via scripts/make_conversion_fixtures.py" % config.model.name,
        }
        path = os.path.join(args.out, fixture_name.replace("/", "__") + ".safetensors")
        save_file(tensors, path, metadata=metadata)
        print(f"{fixture_name}: {weights_name}, |output| {float(captured['output'].abs().mean()):.4g}")

    # Full size: the keys and shapes of every config's original network (built on the CPU, ~1 minute), so a test
    # can check that our networks are built the same at the real widths, depths and resolutions.
    from scoresde_diffusers.models.score_sde_configs import SCORE_SDE_CONFIGS

    full_size = {}
    for config_name in SCORE_SDE_CONFIGS:
        model = mutils.get_model(load_config(config_name, {}, {}).model.name)(load_config(config_name, {}, {}))
        full_size[config_name] = state_dict_signature(model)
        print(f"{config_name}: {full_size[config_name]['num_parameters']} parameters at full size")
        del model
    with open(os.path.join(args.out, "full_size_state_dicts.json"), "w") as handle:
        json.dump(full_size, handle, indent=1, sort_keys=True)

    total = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(f"wrote {len(os.listdir(args.out))} files, {total / 1e6:.2f} MB, to {args.out}")


if __name__ == "__main__":
    main()
