#!/usr/bin/env python
"""Train a time-dependent classifier p_t(y | x_t) for class-conditional sampling (Song et al. 2021, Appendix I.1).

    python examples/train_classifier.py                                  # 8x8 digits, VP SDE, CPU, ~2 minutes
    python examples/train_classifier.py --scheduler_path outputs/digits-vp --output_dir outputs/classifier-digits
    accelerate launch examples/train_classifier.py --sde ve --max_train_steps 5000 --push_to_hub

It trains on data noised by the chosen SDE (or by the scheduler of a trained score model, `--scheduler_path`),
reports the held-out accuracy at several noise levels, and writes ``<output_dir>/classifier`` (load it with
``TimeDependentClassifier.from_pretrained``) next to the scheduler. All options: ``--help``; the guide is
docs/controllable_generation.md. The work is `scoresde_diffusers.training.classifier.train_classifier`.
"""

import sys

from scoresde_diffusers.training import CheckpointError
from scoresde_diffusers.training.classifier import parse_classifier_args, train_classifier


def main(argv=None):
    result = train_classifier(parse_classifier_args(argv))
    print(f"chance {result.chance:.3f}; held-out accuracy by t: " + ", ".join(f"t={t:g}: {a:.3f}" for t, a in result.accuracy.items()))
    return result


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ValueError, CheckpointError) as error:  # input the run refuses: the reason, not a traceback
        sys.exit(f"error: {error}")
