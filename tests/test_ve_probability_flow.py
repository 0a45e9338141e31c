"""A VE model trained with the default set-up samples with the probability-flow ODE.

With score_sde's VE set-up (NCSN++: raw x_t of std up to sigma_max in, score = output / sigma out, lambda = sigma^2)
the denoiser error is sigma times the network's and the loss accepts it: on the digits the ODE ended at +-34 for
data in [-1, 1] while PC, whose noise and Langevin steps correct the drift, still gave digits. The trainer now
gives new VE image models EDM's preconditioning (prediction_type="edm"). A short training run on the digits is
enough to tell the two apart: with the old set-up the ODE samples have a standard deviation of about 6 after 150
steps; preconditioned, that of the data (0.77), and no value far outside [-1, 1].
"""

import torch

from scoresde_diffusers.pipelines import ScoreSdeODEPipeline, ScoreSdePCPipeline
from scoresde_diffusers.training import TrainingConfig, train


def test_a_briefly_trained_ve_digits_model_samples_with_the_ode(tmp_path):
    config = TrainingConfig(
        output_dir=str(tmp_path / "ve"), sde="ve", max_train_steps=150, train_batch_size=32, width=16, channel_mult=[1, 2],
        learning_rate=2e-3, lr_warmup_steps=20, sample_every=0, num_sample_images=4, num_inference_steps=3,
        report_to="none", progress_bar=False, checkpointing_steps=1000,
    )
    train(config)
    pipe = ScoreSdePCPipeline.from_pretrained(config.output_dir)
    assert pipe.scheduler.config.prediction_type == "edm"
    ode = ScoreSdeODEPipeline(**pipe.components)
    ode.set_progress_bar_config(disable=True)
    x = ode(batch_size=128, num_inference_steps=20, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert 0.5 < float(x.std()) < 1.0, float(x.std())  # the digits in [-1, 1] have std 0.77
    assert float(x.abs().max()) < 4.0, float(x.abs().max())
