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
    install_requires=[
        "torch>=2.1",
        "diffusers>=0.30",
        "accelerate>=0.30",
        "huggingface_hub>=0.23",
        "safetensors",
        "torchdiffeq>=0.2.3",
        "numpy",
        "tqdm",
        "matplotlib",
    ],
    extras_require={
        "train": ["accelerate>=0.30", "datasets>=2.19", "transformers", "tensorboard", "scikit-learn", "Jinja2"],
        "eval": ["torchmetrics>=1.0"],
        "test": ["torchmetrics>=1.0", "pytest>=7", "scikit-learn", "accelerate>=0.30", "datasets>=2.19", "transformers", "tensorboard", "Jinja2"],
    },
    entry_points={},
)
