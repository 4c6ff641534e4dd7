"""Pretrained semantic segmenters that run on a photo with no training: ``kseg predict --model segformer-b0-ade20k
photo.jpg``, ``kseg.load_model("segformer-b0-ade20k")``.

``deeplabv3-resnet50-voc`` is torchvision's ``deeplabv3_resnet50`` with its published weights
(``COCO_WITH_VOC_LABELS_V1``: Pascal VOC's 21 classes, learned on COCO), converted by
:mod:`kseg.models.torchvision_deeplab` and checked by the SHA-256 digits its file name carries; photos are
resized to a short side of 520, as torchvision's transforms do.

``deeplabv3plus-resnet50-voc`` is keras-hub's ``deeplab_v3_plus_resnet50_pascalvoc`` (DeepLabV3+ on ResNet-50,
Pascal VOC 2012 with SBD), built and loaded by keras-hub itself, an optional dependency
(:mod:`kseg.models.keras_hub_presets`).

Each other preset is a SegFormer checkpoint NVIDIA publishes on the Hugging Face hub
(``nvidia/segformer-b{0,1,2}-finetuned-ade-512-512``: ADE20K, 150 classes;
``nvidia/segformer-b{0,1,2}-finetuned-cityscapes-1024-1024``: Cityscapes, 19 classes), converted into kseg's
:func:`~kseg.models.segformer` by :mod:`kseg.models.hf_segformer`. Its ``config.json`` (the class names,
``id2label``) and ``model.safetensors`` are downloaded once into the Keras cache from a pinned revision (see
:func:`kseg.models.weights.fetch`) or found in ``$KSEG_WEIGHTS_DIR``. Photos are resized so that their short
side is the preset's (512 for ADE20K, 1024 for Cityscapes; rounded to multiples of 32) and the
probabilities resized back, as the authors evaluate (mmsegmentation's ``keep_ratio`` resize).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kseg.data.annotations.common import voc_colormap
from kseg.errors import KsegError

# cityscapesScripts' colours of the 19 training classes, in id order
CITYSCAPES_COLORS = ((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
                     (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
                     (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
                     (0, 80, 100), (0, 0, 230), (119, 11, 32))


VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
VOC_COLORS = tuple(map(tuple, voc_colormap(len(VOC_CLASSES)).tolist()))


@dataclass(frozen=True)
class SemanticPreset:
    repo: str  # a Hugging Face repository, or the URL of a torchvision file
    revision: str
    backbone: str
    dataset: str
    short_side: int
    colors: tuple | None = None
    sha256: str | None = None

    def files(self):
        from kseg.models.hub_files import hub_file

        return hub_file(self.repo, self.revision, "config.json"), hub_file(self.repo, self.revision)


def _ade(b: int, revision: str) -> SemanticPreset:
    return SemanticPreset(f"nvidia/segformer-b{b}-finetuned-ade-512-512", revision, f"mit_b{b}", "ADE20K", 512)


def _cityscapes(b: int, revision: str) -> SemanticPreset:
    return SemanticPreset(f"nvidia/segformer-b{b}-finetuned-cityscapes-1024-1024", revision, f"mit_b{b}",
                          "Cityscapes", 1024, CITYSCAPES_COLORS)


# the hub branches that hold each checkpoint's model.safetensors (Hugging Face's conversion pull requests)
PRESETS = {
    "deeplabv3-resnet50-voc": SemanticPreset("https://download.pytorch.org/models/deeplabv3_resnet50_coco-cd0a2569.pth",
                                             "", "resnet50", "COCO with the Pascal VOC classes", 520,
                                             VOC_COLORS, "cd0a2569"),
    "deeplabv3plus-resnet50-voc": SemanticPreset("kaggle://keras/deeplabv3plus/keras/deeplab_v3_plus_resnet50_pascalvoc/4",
                                                 "", "keras_hub", "Pascal VOC 2012 + SBD", 512, VOC_COLORS),
    "segformer-b0-ade20k": _ade(0, "refs/pr/5"),
    "segformer-b1-ade20k": _ade(1, "8b74291cb371abe2a2860015ded13f5b2fa6dff5"),
    "segformer-b2-ade20k": _ade(2, "refs/pr/2"),
    "segformer-b0-cityscapes": _cityscapes(0, "refs/pr/4"),
    "segformer-b1-cityscapes": _cityscapes(1, "refs/pr/3"),
    "segformer-b2-cityscapes": _cityscapes(2, "refs/pr/3"),
}


def is_preset(name) -> bool:
    """Whether ``name`` names a preset (a file or folder of that name, when one exists, is taken instead)."""
    return isinstance(name, str) and name in PRESETS and not Path(name).exists()


def class_names(config_path) -> list[str]:
    """The class names of a transformers ``config.json`` (``id2label``, in id order)."""
    try:
        labels = json.loads(open(config_path, encoding="utf8").read())["id2label"]
        return [labels[str(i)] for i in range(len(labels))]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise KsegError(f"{config_path}: not a SegFormer config.json with id2label ({type(err).__name__}: {err})") \
            from None


def load_preset(name: str):
    """``(model, info)``: the preset's network (float32, any input size, softmax output) holding its weights,
    and ``{"class_names", "colors", "short_side", "source"}``; files are fetched on first use."""
    from kseg.models.hf_segformer import load_hf_segformer
    from kseg.models.segformer import segformer
    from kseg.models.weights import fetch

    if name not in PRESETS:
        raise KsegError(f"unknown model preset {name!r}: choose one of {', '.join(PRESETS)}")
    preset = PRESETS[name]
    if preset.backbone == "resnet50":
        return _torchvision_deeplab(name, preset)
    if preset.backbone == "keras_hub":
        return _keras_hub_deeplab(name, preset)
    config, weights = preset.files()
    names = class_names(fetch(config, f"the class names of {name}", encoder=False))
    model = segformer(len(names), preset.backbone, name=name.replace("-", "_"))
    load_hf_segformer([layer for layer in model.layers if layer.weights], fetch(weights, f"the weights of {name}", encoder=False))
    info = {"class_names": names, "colors": [list(c) for c in preset.colors] if preset.colors else None,
            "short_side": preset.short_side, "source": f"{preset.repo} ({preset.dataset})"}
    return model, info


def _torchvision_deeplab(name: str, preset: SemanticPreset):
    from kseg.models.torchvision_deeplab import deeplabv3_resnet50, load_torchvision_deeplab
    from kseg.models.weights import WeightFile, fetch

    url = preset.repo.replace("https://download.pytorch.org", _torch_endpoint())
    path = fetch(WeightFile(url, preset.repo.rsplit("/", 1)[1], sha256=preset.sha256), f"the weights of {name}",
                 encoder=False)
    model = deeplabv3_resnet50(len(VOC_CLASSES), name=name.replace("-", "_"))
    load_torchvision_deeplab(model, path)
    return model, {"class_names": list(VOC_CLASSES), "colors": [list(c) for c in preset.colors],
                   "short_side": preset.short_side, "source": f"torchvision's deeplabv3_resnet50 ({preset.dataset})"}


def _keras_hub_deeplab(name: str, preset: SemanticPreset):
    from kseg.models.keras_hub_presets import load_segmenter, preset_variant, short_side_of, wrap_segmenter

    segmenter = load_segmenter(name, preset.repo)
    model = wrap_segmenter(segmenter, name, len(VOC_CLASSES))
    return model, {"class_names": list(VOC_CLASSES), "colors": [list(c) for c in preset.colors],
                   "short_side": short_side_of(segmenter, preset.short_side),
                   "source": f"keras-hub's {preset_variant(preset.repo)} ({preset.dataset})"}


def _torch_endpoint() -> str:
    """``$KSEG_TORCH_ENDPOINT`` (a mirror of download.pytorch.org), else download.pytorch.org."""
    import os

    return os.environ.get("KSEG_TORCH_ENDPOINT", "https://download.pytorch.org").rstrip("/")


def segformer_weights(name: str, backbone: str) -> str:
    """The local checkpoint of SegFormer preset ``name`` (fetched once), to start a ``backbone`` encoder from."""
    preset = PRESETS.get(name)
    if preset is None or not preset.repo.startswith("nvidia/segformer"):
        choices = ", ".join(n for n, p in PRESETS.items() if p.repo.startswith("nvidia/segformer"))
        raise KsegError(f"unknown SegFormer preset {name!r} for encoder weights: choose one of {choices}")
    if preset.backbone != backbone:
        raise KsegError(f"{name} holds a {preset.backbone} encoder, not {backbone}: choose --backbone {preset.backbone}")
    from kseg.models.weights import fetch

    return fetch(preset.files()[1], f"the weights of {name}", encoder=False)
