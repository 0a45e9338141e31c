#!/usr/bin/env python
"""Train a score-based generative model through an SDE (Song et al., ICLR 2021).

    python examples/train.py                                   # VP model of the 8x8 digits, CPU, ~8 minutes
    accelerate launch examples/train.py --dataset path/to/images --resolution 32 --sde ve
    accelerate launch --multi_gpu --num_processes 2 examples/train.py --cpu --max_train_steps 100   # 2 CPU processes

diffusers' ``train_unconditional.py`` flag names work too (``--dataset_name``, ``--train_data_dir``,
``--num_epochs``, ``--logger``, ...). All options: ``python examples/train.py --help``; the guide is
docs/training.md. The script is only the command line: the work is `scoresde_diffusers.training.train`.
"""

import sys

from scoresde_diffusers.training import CheckpointError, parse_args, train


def main(argv=None):
    result = train(parse_args(argv))
    return result


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ValueError, CheckpointError) as error:  # input the run refuses: the reason, not a traceback
        sys.exit(f"error: {error}")
