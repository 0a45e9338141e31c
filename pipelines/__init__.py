"""diffusers pipelines for score SDEs (installed as `scoresde_diffusers.pipelines`)."""

from .pipeline_score_sde_utils import ScoreSdePipelineMixin, ScoreSdePipelineOutput
from .score_sde_pc import ScoreSdePCPipeline
from .score_sde_ald import ScoreSdeAnnealedLangevinPipeline
from .score_sde_ode import ScoreSdeODEPipeline
from .score_sde_likelihood import ScoreSdeLikelihoodEvaluation, ScoreSdeLikelihoodOutput, ScoreSdeLikelihoodPipeline
from .score_sde_conditional import ScoreSdeClassConditionalPipeline
from .score_sde_inpaint import ScoreSdeInpaintPipeline
from .score_sde_colorization import ScoreSdeColorizationPipeline
from .score_sde_fast import ScoreSdeAdaptivePipeline
