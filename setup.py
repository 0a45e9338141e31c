"""Install with `pip install .` or `pip install -e .[test]`.

One importable namespace, `scoresde_diffusers`, is assembled from three top-level folders: the library itself,
`schedulers/` (installed as `scoresde_diffusers.schedulers`) and `pipelines/` (as `scoresde_diffusers.pipelines`),
following diffusers' own split of schedulers and pipelines.
"""

from setuptools import find_packages, setup

library_packages = find_packages(include=["scoresde_diffusers", "scoresde_diffusers.*"])
# schedulers/ and pipelines/ (with its sub-packages) are mapped into the namespace.
mapped_packages = ["scoresde_diffusers.schedulers", "scoresde_diffusers.pipelines"] + [
    "scoresde_diffusers.pipelines." + name for name in find_packages("pipelines")
]

setup(
    name="scoresde_diffusers",
    version="0.1.0",
    description="Score-based generative modelling through SDEs (VE, VP, sub-VP) for Hugging Face diffusers",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=library_packages + mapped_packages,
    package_dir={
        "scoresde_diffusers.schedulers": "schedulers",
        "scoresde_diffusers.pipelines": "pipelines",
    },
    # The floors are the oldest releases the test suite passed with: diffusers 0.38 is the first that asks for
    # `trust_remote_code=True` before running the one-line pipeline.py of a saved folder (earlier ones run it
    # unasked), and its own floor is huggingface_hub 0.34; datasets 2.21 is the first that works with NumPy 2.
    install_requires=[
        "torch>=2.1",
        "diffusers>=0.38",
        "accelerate>=0.30",
        "huggingface_hub>=0.34",
        "safetensors",
        "torchdiffeq>=0.2.3",
        "numpy",
        "tqdm",
    ],
    extras_require={
        # matplotlib draws the loss curves and 2-D sample plots of training and of examples/four_gaussians.py.
        "train": ["accelerate>=0.30", "datasets>=2.21", "tensorboard", "scikit-learn", "Jinja2", "matplotlib"],
        # FID / KID: torchmetrics' metrics on torch-fidelity's Inception-v3 (examples/evaluate.py).
        "eval": ["torchmetrics>=1.0", "torch-fidelity>=0.3", "scikit-learn"],
        "test": ["torchmetrics>=1.0", "pytest>=7", "scikit-learn", "accelerate>=0.30", "datasets>=2.21", "tensorboard", "Jinja2", "matplotlib"],
    },
    entry_points={},
)
