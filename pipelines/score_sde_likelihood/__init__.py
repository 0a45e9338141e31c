from .pipeline_score_sde_likelihood import (
    ScoreSdeLikelihoodEvaluation,
    ScoreSdeLikelihoodOutput,
    ScoreSdeLikelihoodPipeline,
)
