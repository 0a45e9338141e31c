"""Every folder the project saves loads with diffusers' generic loader (issue 12, item 1).

`save_pretrained` of any of our pipelines (and so examples/train.py's output) writes ``pipeline.py``, a one-line
import of the pipeline class, and names it in model_index.json (``"_class_name": ["pipeline", "<class>"]``):
diffusers' custom-pipeline form, the one Hub-hosted community pipelines use. diffusers 0.42 executes such a file
only with ``trust_remote_code=True``, locally and from the Hub alike, so the one-liner is
``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)``. Our own classes read the same folder
without executing anything. The per-class check (same class, same samples) is `PipelineCommonTest.test_generic_loading`.
"""

import json
import os
from pathlib import Path

import pytest
import torch
from diffusers import DiffusionPipeline
from huggingface_hub import ModelCard

from scoresde_diffusers import GaussianMixtureScoreModel, VPSDEScheduler
from scoresde_diffusers.pipelines import ScoreSdeODEPipeline, ScoreSdePCPipeline
from scoresde_diffusers.pipelines.pipeline_score_sde_utils import GENERIC_LOADING_ONE_LINER
from scoresde_diffusers.training import TrainingConfig, train

DOCS = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "pipelines.md")


def mixture_pipeline(pipeline_class=ScoreSdePCPipeline):
    scheduler = VPSDEScheduler()
    pipe = pipeline_class(unet=GaussianMixtureScoreModel.four_gaussians(scheduler=scheduler), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def samples(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe(batch_size=4, num_inference_steps=5, generator=torch.Generator().manual_seed(0), output_type="pt").images


def test_training_output_loads_with_the_generic_loader(tmp_path):
    # What examples/train.py writes: train() saves the pipeline with save_pretrained's defaults.
    config = TrainingConfig(
        output_dir=str(tmp_path), dataset="four_gaussians", num_samples=256, train_batch_size=64, max_train_steps=2,
        mlp_hidden_dim=16, mlp_layers=1, checkpointing_steps=10**6, sample_every=0, num_sample_images=4,
        num_inference_steps=4, report_to="none", progress_bar=False,
    )  # fmt: skip
    train(config)
    generic = DiffusionPipeline.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(generic) is ScoreSdePCPipeline
    torch.testing.assert_close(samples(generic), samples(ScoreSdePCPipeline.from_pretrained(tmp_path)), rtol=0, atol=0)


def test_generic_loading_needs_trust_remote_code_and_says_so(tmp_path):
    mixture_pipeline().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"(?s)pipeline\.py.*Pass `trust_remote_code=True`"):
        DiffusionPipeline.from_pretrained(tmp_path)


def test_our_classes_load_the_folder_without_running_its_pipeline_file(tmp_path):
    mixture_pipeline().save_pretrained(tmp_path)
    # A file that would fail if executed: our loaders must not run it (they read model_index.json's class name).
    (tmp_path / "pipeline.py").write_text("raise RuntimeError('pipeline.py was executed')\n")
    assert type(ScoreSdeODEPipeline.from_pretrained(tmp_path)) is ScoreSdeODEPipeline
    assert type(ScoreSdePCPipeline.from_pretrained(tmp_path)) is ScoreSdePCPipeline


def test_plain_diffusers_layout_on_request(tmp_path):
    mixture_pipeline().save_pretrained(tmp_path, write_pipeline_file=False)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == "ScoreSdePCPipeline" and not (tmp_path / "pipeline.py").exists()
    assert type(ScoreSdePCPipeline.from_pretrained(tmp_path)) is ScoreSdePCPipeline


def test_hub_repo_loads_with_the_generic_loader_and_with_ours(tmp_path):
    # A repo id goes through diffusers' download; huggingface_hub's cache stands in for the unreachable Hub.
    pipe = mixture_pipeline()
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--someone--four-gaussians"
    pipe.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    where = dict(cache_dir=str(tmp_path), local_files_only=True)
    generic = DiffusionPipeline.from_pretrained("someone/four-gaussians", trust_remote_code=True, **where)
    ours = ScoreSdePCPipeline.from_pretrained("someone/four-gaussians", **where)  # no trust_remote_code needed
    assert type(generic) is type(ours) is ScoreSdePCPipeline
    torch.testing.assert_close(samples(generic), samples(pipe), rtol=0, atol=0)
    torch.testing.assert_close(samples(ours), samples(pipe), rtol=0, atol=0)


def test_push_to_hub_uploads_the_generic_loading_files(tmp_path, monkeypatch):
    import diffusers.pipelines.pipeline_utils as pipeline_utils
    import diffusers.utils.hub_utils as hub_utils

    uploaded = {}

    class Repo:
        repo_id = "someone/four-gaussians"

    def fake_upload_folder(repo_id, folder_path, **kwargs):
        uploaded["files"] = sorted(os.listdir(folder_path))
        uploaded["index"] = json.loads(open(os.path.join(folder_path, "model_index.json")).read())

    monkeypatch.setattr(pipeline_utils, "create_repo", lambda *args, **kwargs: Repo())
    monkeypatch.setattr(pipeline_utils, "load_or_create_model_card", lambda *args, **kwargs: ModelCard("---\n---\n"))
    monkeypatch.setattr(hub_utils, "upload_folder", fake_upload_folder)
    mixture_pipeline().save_pretrained(str(tmp_path), push_to_hub=True, repo_id="someone/four-gaussians")
    assert "pipeline.py" in uploaded["files"]
    assert uploaded["index"]["_class_name"] == ["pipeline", "ScoreSdePCPipeline"]


def test_docs_give_the_one_liner():
    with open(DOCS, encoding="utf-8") as file:
        text = file.read()
    assert GENERIC_LOADING_ONE_LINER.format(path="my-pc-pipeline") in text


def test_reading_model_index_passes_diffusers_keywords_through(tmp_path, monkeypatch):
    # diffusers 0.33-0.40 read model_index.json with a `dduf_entries` keyword; our reader must hand it on, whatever
    # the installed diffusers does with it.
    mixture_pipeline().save_pretrained(tmp_path)
    seen = {}

    def reader(cls, json_file, **kwargs):
        seen.update(kwargs)
        return json.loads(Path(json_file).read_text())

    monkeypatch.setattr(DiffusionPipeline, "_dict_from_json_file", classmethod(reader))
    config = ScoreSdePCPipeline._dict_from_json_file(tmp_path / "model_index.json", dduf_entries=None)
    assert seen == {"dduf_entries": None} and config["_class_name"] == "ScoreSdePCPipeline"

