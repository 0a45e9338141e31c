"""Convert a score_sde_pytorch checkpoint into a `ScoreSdePCPipeline` folder.

    python scripts/convert_score_sde_checkpoint.py --checkpoint_path checkpoint_26.pth \\
        --config vp/cifar10_ddpmpp_deep_continuous --output_dir ./ddpmpp-deep-cifar10

The folder holds the network (`NCSNppModel` or `ScoreSdeDDPMModel`, the EMA weights unless ``--weights model``),
our scheduler with the config's SDE, sampler, timestep map and prediction type, the data range, and a model card
saying where the weights came from. The checkpoint is read with ``torch.load(weights_only=True)``: only tensors
and numbers. The conversion itself is `scoresde_diffusers.models.score_sde_configs.convert_score_sde_checkpoint`.
"""

import argparse
import json
import os
import sys

from huggingface_hub import create_repo, upload_folder

from scoresde_diffusers.models.score_sde_configs import CHECKPOINT_ALIASES, SCORE_SDE_CONFIGS, WEIGHT_CHOICES, convert_score_sde_checkpoint


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint_path", required=True, help="score_sde checkpoint_*.pth (with 'model' and 'ema' states)")
    parser.add_argument(
        "--config", required=True,
        help="score_sde config name, e.g. ve/cifar10_ncsnpp_continuous; one of: "
        + ", ".join(sorted(SCORE_SDE_CONFIGS) + sorted(CHECKPOINT_ALIASES)),
    )
    parser.add_argument("--output_dir", required=True, help="folder to write the pipeline into")
    parser.add_argument("--weights", choices=WEIGHT_CHOICES, default="ema", help="EMA weights (default) or the raw model's")
    parser.add_argument(
        "--model_overrides", type=json.loads, default=None,
        help='JSON of network config values that differ from the config file, e.g. \'{"nf": 64}\' for a model trained '
        "with score_sde's --config.model.nf=64",
    )
    parser.add_argument("--push_to_hub", action="store_true", help="upload the folder to the Hugging Face Hub")
    parser.add_argument("--hub_model_id", default=None, help="Hub repository id (default: the output folder's name)")
    parser.add_argument("--hub_token", default=None)
    parser.add_argument("--private", action="store_true", help="create the Hub repository as private")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    repo_id = args.hub_model_id or os.path.basename(os.path.normpath(args.output_dir)) if args.push_to_hub else None
    try:
        convert_score_sde_checkpoint(
            args.checkpoint_path, args.config, args.output_dir, weights=args.weights, repo_id=repo_id,
            model_overrides=args.model_overrides,
        )
    except ValueError as err:
        sys.exit(f"error: {err}")
    print(f"wrote {args.output_dir}")
    if args.push_to_hub:
        repo_id = create_repo(repo_id, token=args.hub_token, private=args.private, exist_ok=True).repo_id
        upload_folder(repo_id=repo_id, folder_path=args.output_dir, token=args.hub_token, commit_message=f"Convert score_sde {args.config}")
        print(f"uploaded to https://huggingface.co/{repo_id}")
    return args.output_dir


if __name__ == "__main__":
    main()
