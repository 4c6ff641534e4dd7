"""Where the ImageNet weights of kseg's HRNet and MiT (SegFormer) encoders come from: files on the Hugging
Face hub, each at a pinned revision, with the SHA-256 the hub publishes for it where kseg knows it.

- HRNet: timm's checkpoints (``timm/<variant>.<tag>``, ``model.safetensors``), converted by name
  (:mod:`kseg.models.timm_weights`).
- MiT-B0 .. B5: NVIDIA's ImageNet-1k encoders (``nvidia/mit-b0`` .. ``mit-b5``, the SegFormer authors'
  weights in transformers' names), converted by :mod:`kseg.models.hf_segformer` (mit-b2 from its
  ``pytorch_model.bin``, read without PyTorch: kseg knows no revision of it with a ``.safetensors`` file).

SHA-256 values are those shown on the files' hub pages ("Git LFS Details"), except mit-b0's, which is the
value another public project pins for the same revision. Where kseg knows none, the file comes from a
pinned revision (or ``main``) and :func:`kseg.models.weights.fetch` says so with the SHA-256 it got.
Files are downloaded once into the Keras cache (``$KERAS_HOME/models``) or found in ``$KSEG_WEIGHTS_DIR``
under :attr:`WeightFile.fname`; set ``$HF_ENDPOINT`` to use a mirror of the hub.
"""

from __future__ import annotations

import os

from kseg.models.weights import WeightFile


def hub_url(repo: str, revision: str, filename: str) -> str:
    """``https://huggingface.co/<repo>/resolve/<revision>/<filename>`` (``$HF_ENDPOINT`` replaces the host)."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    return f"{endpoint}/{repo}/resolve/{revision.replace('/', '%2F')}/{filename}"


def hub_file(repo: str, revision: str, filename: str = "model.safetensors", sha256: str | None = None) -> WeightFile:
    stem, _, suffix = filename.rpartition(".")
    short = revision.replace("refs/pr/", "pr")[:8]
    return WeightFile(hub_url(repo, revision, filename), f"{repo.replace('/', '--')}--{short}--{stem}.{suffix}",
                      sha256=sha256)


# backbone: (repo, revision, sha256 or None[, file name: model.safetensors by default])
IMAGENET = {
    "hrnet_w18_small": ("timm/hrnet_w18_small.ms_in1k", "main", None),
    "hrnet_w18_small_v2": ("timm/hrnet_w18_small_v2.ms_in1k", "ac58bf123ef54e47c2356f9a298ae7d634fbd238",
                           "cd7436f6de68d589ac0d05b90e49199c9ad28669381a25250e9667aa9e5b670e"),
    "hrnet_w18": ("timm/hrnet_w18.ms_aug_in1k", "7c3e065603bdb0ef05e7dacf4ad18833442a9962",
                  "f9e3c451448c037d4dd549c96f3013d2926b492f69f27c74bbcc909e053e677c"),
    "hrnet_w32": ("timm/hrnet_w32.ms_in1k", "d3f87a845807b80ae4cfd95815416cfbe90fab99", None),
    "hrnet_w48": ("timm/hrnet_w48.ms_in1k", "main", None),
    "mit_b0": ("nvidia/mit-b0", "25ce79d97e6d9d509ed12e17cb2eb89b0a83a2dc",
               "3e5ad9cd1dd8ecf8305c23fcdf01ef241f08c7b2dddacb6ec7de5a887188798a"),
    "mit_b1": ("nvidia/mit-b1", "44575a0572f5374ed1e5b4e46ec8276222f6ffe8",
               "4c19537dff32bbaa876174c371759ac1046c980bbf8096273bb03261429bdce1"),
    "mit_b2": ("nvidia/mit-b2", "3bb39e8739149c3777d0325349b2a6c32c6413db", None, "pytorch_model.bin"),
    "mit_b3": ("nvidia/mit-b3", "4c2f314b6a213100cb822264a737f39d1ce062b8",
               "8de18cbe1efd929b0caa6b54edb92a4524e10e4d6f9468645933af15f5b2923e"),
    "mit_b4": ("nvidia/mit-b4", "8b08776183e7059b0a27a2dc186d4db5d89fea1a", None),
    "mit_b5": ("nvidia/mit-b5", "8c15ac959fdc3130572f9320d6955cef46046a72",
               "ce3ad22d97c4352b2f28a5a732f547de19b9a03a8be2e769e12ff07c34febec0"),
}


def imagenet_file(backbone: str) -> WeightFile:
    repo, revision, sha256, *filename = IMAGENET[backbone]
    return hub_file(repo, revision, *filename, sha256=sha256)


def imagenet_path(backbone: str) -> str:
    """The local ImageNet checkpoint of ``backbone`` (found, or downloaded once and checked)."""
    from kseg.models.weights import fetch

    return fetch(imagenet_file(backbone), f"the ImageNet weights of {backbone}")
