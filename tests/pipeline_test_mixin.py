"""`PipelineCommonTest`: the checks every score-SDE pipeline must pass (shared by all pipeline test files).

Use it by subclassing it together with nothing else (pytest collects ``Test*`` classes)::

    class TestMyPipeline(PipelineCommonTest):
        pipeline_class = MyPipeline

        def get_dummy_components(self):          # kwargs of pipeline_class(...): small, fast, float32
            scheduler = VESDEScheduler()
            return {"unet": GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler), "scheduler": scheduler}

        def get_dummy_inputs(self, generator):    # kwargs of pipe(...), WITHOUT output_type and return_dict
            return {"batch_size": 3, "num_inference_steps": 4, "generator": generator}

What the mixin checks (one test each): save/load round trip (model_index.json, safetensors weights, same output
for the same seed); loading with diffusers' generic `DiffusionPipeline.from_pretrained`; determinism with a generator; ``output_type`` pt / np / pil (pil only with image-shaped
components); ``return_dict=False`` gives ``output.to_tuple()``; the progress bar and its ``disable`` switch;
float64 components give float64 output; ``callback_on_step_end`` is called once per step, in order, and what it
returns replaces the tensor; components can be shared with other pipeline classes; a non-SDE scheduler and an
unknown ``output_type`` are ValueErrors.

Hooks, all optional (class attributes or methods to override where a pipeline differs):

- ``get_dummy_image_components()``: like `get_dummy_components` but image-shaped (``sample_size``/``in_channels``);
  the default builds ``four_gaussians`` as (2, 1, 1) images from the dummy scheduler. Return None to skip pil.
- ``output_types``: the ``output_type`` values the pipeline accepts, default ``("pt", "np", "pil")``; ``()`` for a
  pipeline without ``output_type`` (the mixin then passes neither ``output_type`` nor compares conversions).
- ``output_tensor(output)``: the main tensor of a ``return_dict=True`` output; default ``output.images``.
- ``stochastic``: True if different seeds must give different outputs (default True).
- ``callback_tensor``: the name of the tensor the callback sees and may replace (default ``"sample"``), or None to
  skip the callback test; ``expected_callback_steps(inputs)``: how many times it must be called (default
  ``inputs["num_inference_steps"]``); ``callback_replaces_output``: True if replacing that tensor with zeros on
  the last step makes the ``pt`` output zeros (default True).
- ``shared_pipeline_classes``: other pipeline classes that must build from ``pipe.components`` (default: none).
- ``atol``: tolerance of the comparisons that are not bitwise (default 0: save/load and determinism are exact).
"""

import io
import json
import os
from contextlib import redirect_stderr
from typing import Any, Dict, Optional

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDPMScheduler

from scoresde_diffusers import GaussianMixtureScoreModel


class PipelineCommonTest:
    pipeline_class = None
    output_types = ("pt", "np", "pil")
    stochastic = True
    callback_tensor: Optional[str] = "sample"
    callback_replaces_output = True
    shared_pipeline_classes = ()
    atol = 0.0

    # ------------------------------------------------------------------ hooks
    def get_dummy_components(self) -> Dict[str, Any]:
        raise NotImplementedError

    def get_dummy_inputs(self, generator: torch.Generator) -> Dict[str, Any]:
        raise NotImplementedError

    def get_dummy_image_components(self) -> Optional[Dict[str, Any]]:
        components = self.get_dummy_components()
        scheduler = components["scheduler"]
        components["unet"] = GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler, sample_size=1, in_channels=2)
        return components

    def output_tensor(self, output) -> torch.Tensor:
        return output.images

    def expected_callback_steps(self, inputs: Dict[str, Any]) -> int:
        return inputs["num_inference_steps"]

    # ------------------------------------------------------------------ helpers
    def get_pipeline(self, components: Optional[Dict[str, Any]] = None):
        pipe = self.pipeline_class(**(self.get_dummy_components() if components is None else components))
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def get_inputs(self, seed: int = 0, **overrides) -> Dict[str, Any]:
        inputs = self.get_dummy_inputs(torch.Generator().manual_seed(seed))
        if "pt" in self.output_types:
            inputs["output_type"] = "pt"
        inputs.update(overrides)
        return inputs

    def run(self, pipe, seed: int = 0, **overrides):
        return pipe(**self.get_inputs(seed, **overrides))

    def assert_close(self, a: torch.Tensor, b: torch.Tensor, atol: Optional[float] = None):
        atol = self.atol if atol is None else atol
        assert a.shape == b.shape, (a.shape, b.shape)
        if atol == 0:
            assert torch.equal(a, b), f"max difference {(a - b).abs().max().item():.3g}"
        else:
            torch.testing.assert_close(a, b, atol=atol, rtol=0)

    # ------------------------------------------------------------------ the checks
    def test_save_load_round_trip(self, tmp_path):
        pipe = self.get_pipeline()
        expected = self.output_tensor(self.run(pipe))
        pipe.save_pretrained(tmp_path)
        with open(tmp_path / "model_index.json") as file:
            index = json.load(file)
        # [file stem, class]: diffusers' custom-pipeline form, which the generic loader reads (see test_generic_loading)
        assert index["_class_name"] == ["pipeline", self.pipeline_class.__name__]
        for name, component in pipe.components.items():
            if isinstance(component, torch.nn.Module):
                files = os.listdir(tmp_path / name)
                assert any(f.endswith(".safetensors") for f in files), f"{name}: no safetensors weights in {files}"
                assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files), files
        loaded = self.pipeline_class.from_pretrained(tmp_path)
        loaded.set_progress_bar_config(disable=True)
        assert type(loaded) is self.pipeline_class
        for name, component in pipe.components.items():
            assert type(loaded.components[name]) is type(component)
            if hasattr(component, "config"):
                public = lambda config: {k: v for k, v in dict(config).items() if not k.startswith("_")}
                assert public(loaded.components[name].config) == public(component.config), name
        self.assert_close(self.output_tensor(self.run(loaded)), expected)

    def test_generic_loading(self, tmp_path):
        # diffusers' generic loader builds this class from the saved folder (issue 12, item 1).
        from diffusers import DiffusionPipeline

        pipe = self.get_pipeline()
        expected = self.output_tensor(self.run(pipe))
        pipe.save_pretrained(tmp_path)
        loaded = DiffusionPipeline.from_pretrained(tmp_path, trust_remote_code=True)
        loaded.set_progress_bar_config(disable=True)
        assert type(loaded) is self.pipeline_class
        assert {name: type(c) for name, c in loaded.components.items()} == {name: type(c) for name, c in pipe.components.items()}
        assert loaded.data_range == pipe.data_range
        self.assert_close(self.output_tensor(self.run(loaded)), expected)

    def test_determinism_with_generator(self):
        pipe = self.get_pipeline()
        first = self.output_tensor(self.run(pipe, seed=0))
        second = self.output_tensor(self.run(pipe, seed=0))
        self.assert_close(first, second)
        assert torch.isfinite(first).all()
        if self.stochastic:
            assert not torch.allclose(first, self.output_tensor(self.run(pipe, seed=1)))

    def test_output_types(self):
        if not self.output_types:
            pytest.skip("the pipeline has no output_type")
        pipe = self.get_pipeline()
        pt = self.output_tensor(self.run(pipe, output_type="pt"))
        assert isinstance(pt, torch.Tensor)
        if "np" in self.output_types:
            array = self.output_tensor(self.run(pipe, output_type="np"))
            assert isinstance(array, np.ndarray) and array.min() >= 0 and array.max() <= 1
            low, high = pipe.data_range
            expected = ((pt - low) / (high - low)).clamp(0, 1)
            expected = expected.permute(0, 2, 3, 1) if expected.ndim == 4 else expected
            np.testing.assert_allclose(array, expected.float().cpu().numpy(), atol=1e-6)
        if "pil" in self.output_types:
            components = self.get_dummy_image_components()
            if components is None:
                return
            image_pipe = self.get_pipeline(components)
            images = self.output_tensor(self.run(image_pipe, output_type="pil"))
            assert isinstance(images, list) and all(isinstance(image, PIL.Image.Image) for image in images)
            with pytest.raises(ValueError, match="pil"):
                self.run(pipe, output_type="pil")  # vector-shaped samples are not images

    def test_unknown_output_type(self):
        if not self.output_types:
            pytest.skip("the pipeline has no output_type")
        with pytest.raises(ValueError, match="output_type"):
            self.run(self.get_pipeline(), output_type="latent-ish")

    def test_return_dict_false(self):
        pipe = self.get_pipeline()
        output = self.run(pipe, seed=0)
        as_tuple = self.run(pipe, seed=0, return_dict=False)
        assert isinstance(as_tuple, tuple)
        expected = output.to_tuple()
        assert len(as_tuple) == len(expected)
        for a, b in zip(as_tuple, expected):
            if isinstance(a, torch.Tensor):
                self.assert_close(a, b)
            else:
                assert a == b

    def test_progress_bar(self):
        pipe = self.pipeline_class(**self.get_dummy_components())
        stderr = io.StringIO()
        with redirect_stderr(stderr):
            self.run(pipe)
        assert "100%" in stderr.getvalue() or "it/s" in stderr.getvalue() or "s/it" in stderr.getvalue()
        pipe.set_progress_bar_config(disable=True)
        stderr = io.StringIO()
        with redirect_stderr(stderr):
            self.run(pipe)
        assert stderr.getvalue() == ""

    def test_float64(self):
        pipe = self.get_pipeline()
        pipe.to(torch.float64)
        output = self.output_tensor(self.run(pipe))
        assert output.dtype == torch.float64
        assert torch.isfinite(output).all()

    def test_callback_on_step_end(self):
        if self.callback_tensor is None:
            pytest.skip("the pipeline has no callback")
        pipe = self.get_pipeline()
        inputs = self.get_inputs()
        steps = []

        def callback(pipeline, i, t, callback_kwargs):
            assert pipeline is pipe
            assert set(callback_kwargs) == {self.callback_tensor}
            steps.append(i)
            if i == expected - 1 and self.callback_replaces_output:
                return {self.callback_tensor: torch.zeros_like(callback_kwargs[self.callback_tensor])}
            return callback_kwargs

        expected = self.expected_callback_steps(inputs)
        output = pipe(**inputs, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=[self.callback_tensor])
        assert steps == list(range(expected))
        if self.callback_replaces_output and "pt" in self.output_types:
            assert torch.count_nonzero(self.output_tensor(output)) == 0
        with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
            pipe(**inputs, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["not_a_tensor"])

    def test_components_sharing(self):
        pipe = self.get_pipeline()
        for cls in (self.pipeline_class, *self.shared_pipeline_classes):
            other = cls(**pipe.components)
            for name, component in pipe.components.items():
                assert getattr(other, name) is component, f"{cls.__name__}.{name} is not shared"

    def test_rejects_non_sde_scheduler(self):
        pipe = self.get_pipeline()
        pipe.scheduler = DDPMScheduler()
        with pytest.raises(ValueError, match=r"needs a ScoreSde\w*SchedulerMixin scheduler \(VESDEScheduler, .*got DDPMScheduler"):
            self.run(pipe)
