"""diffusers pipelines for score SDEs (installed as `scoresde_diffusers.pipelines`)."""
