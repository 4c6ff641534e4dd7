"""HRNetV2 (Wang et al., "Deep High-Resolution Representation Learning for Visual Recognition", 2019).

The network keeps a high-resolution representation all the way through instead
of recovering it in a decoder:

- stem: two 3x3 stride-2 conv-BN-ReLU (``conv1``/``bn1``, ``conv2``/``bn2``): stride 4;
- ``layer1``: bottleneck residual blocks (stage 1, one branch at stride 4);
- ``transition1``..``transition3``: each adds a branch at half the resolution
  (a 3x3 stride-2 conv-BN-ReLU of the lowest-resolution branch) and changes the
  channels of an existing branch where the next stage wants other widths;
- ``stage2``..``stage4``: 2, 3 and 4 parallel branches (strides 4, 8, 16, 32;
  widths C, 2C, 4C, 8C, C = 18 for W18), repeated *high-resolution modules*:
  basic residual blocks on each branch, then a multi-resolution fusion where
  each output branch is the ReLU of the sum of every input branch brought to its
  resolution and width (a 1x1 conv-BN and nearest upsampling from a lower
  resolution, a chain of 3x3 stride-2 conv-BNs from a higher one);
- the HRNetV2 segmentation head (HRNet-Semantic-Segmentation's ``last_layer``):
  the four branches upsampled bilinearly to stride 4 and concatenated
  (15C channels), a 1x1 conv (with bias)-BN-ReLU of the same width, a 1x1
  classifier and a bilinear x4 upsampling to the input size.

Variants (``backbone``), with timm's stage configurations: ``hrnet_w18_small``
(HRNetV2-W18-Small-v1), ``hrnet_w18_small_v2``, ``hrnet_w18``, ``hrnet_w32`` and
``hrnet_w48``. Inputs are raw RGB in [0, 255]; the ImageNet mean/std
normalisation timm's checkpoints expect is the ``normalize`` layer in front.

Layer names follow timm's ``HighResolutionNet`` module names so that a
converter can load timm's ImageNet checkpoints by name. The rule: a kseg layer
holding weights is named like timm's module path with every ``.`` replaced by
``_``: ``conv1``, ``bn2``, ``layer1_0_downsample_0``, ``transition2_2_0_0``
(conv) / ``transition2_2_0_1`` (BN), ``stage3_1_branches_2_0_conv1``,
``stage4_0_fuse_layers_3_0_1_0`` (conv), ``stage4_0_fuse_layers_0_2_1`` (BN).
So for each key of timm's state dict, ``module.replace(".", "_")`` is the Keras
layer and the last component picks the variable: a ``Conv2d`` ``weight``
(O, I, kh, kw) is the kernel transposed to (kh, kw, I, O); a ``BatchNorm2d``'s
``weight``/``bias``/``running_mean``/``running_var`` are ``gamma``/``beta``/
``moving_mean``/``moving_variance`` (``num_batches_tracked`` has no
counterpart). timm's classification head (``incre_modules``,
``downsamp_modules``, ``final_layer``, ``classifier``) has no kseg layer; the
segmentation head (``last_layer_0`` conv, ``last_layer_1`` BN, ``last_layer_3``
classifier) has no timm one. Layers without weights (ReLUs, additions,
paddings, upsamplings) carry names derived from their block. Batch norms use
PyTorch's epsilon (1e-5) and momentum (0.1, Keras ``momentum=0.9``), and
stride-2 3x3 convolutions pad one pixel on every side (PyTorch's
``padding=1``) rather than Keras's asymmetric "same", so converted weights
compute what they compute in timm.
"""

from __future__ import annotations

import keras
from keras import layers

from kseg.errors import KsegError
from kseg.models.layers import BilinearUpSampling2D, FusedBatchNormalization, check_input_shape, freeze, head
from kseg.models.parts import declare_encoder_ends

declare_encoder_ends(r"stage4_\d+_fuse_act_\d+")  # the four branches' outputs after stage 4's last fusion

# stage 1: (blocks, channels) of bottleneck blocks; stages 2-4: (modules, blocks per branch, channels per branch)
CONFIGS = {
    "hrnet_w18_small": dict(stage1=(1, 32), stages=((1, (2, 2), (16, 32)),
                                                      (1, (2, 2, 2), (16, 32, 64)),
                                                      (1, (2, 2, 2, 2), (16, 32, 64, 128)))),
    "hrnet_w18_small_v2": dict(stage1=(2, 64), stages=((1, (2, 2), (18, 36)),
                                                         (3, (2, 2, 2), (18, 36, 72)),
                                                         (2, (2, 2, 2, 2), (18, 36, 72, 144)))),
}
for _w in (18, 32, 48):
    CONFIGS[f"hrnet_w{_w}"] = dict(stage1=(4, 64), stages=((1, (4, 4), (_w, 2 * _w)),
                                                            (4, (4, 4, 4), (_w, 2 * _w, 4 * _w)),
                                                            (3, (4, 4, 4, 4), (_w, 2 * _w, 4 * _w, 8 * _w))))
BACKBONES = tuple(CONFIGS)
DEFAULT_BACKBONE = "hrnet_w18_small_v2"
STEM_WIDTH = 64
BOTTLENECK_EXPANSION = 4
HEAD_LAYERS = ("last_layer_0", "last_layer_1", "last_layer_3")  # the segmentation head's layers with weights

_IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
_IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


def _kernel_init():
    """He (Kaiming) normal initialisation on the fan-out, as timm's HRNet: a new instance per layer (one shared
    instance would give every kernel of a shape the same values)."""
    return keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")


def _conv(x, filters: int, kernel_size: int, strides: int, name: str):
    if strides > 1 and kernel_size > 1:  # PyTorch's symmetric padding of (k - 1) / 2
        x = layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    return layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=False,
                         kernel_initializer=_kernel_init(), name=name)(x)


def _bn(x, name: str):
    return FusedBatchNormalization(epsilon=1e-5, momentum=0.9, name=name)(x)


def _relu(x, name: str):
    return layers.ReLU(name=name)(x)


def _bottleneck(x, planes: int, name: str, strides: int = 1):
    out = planes * BOTTLENECK_EXPANSION
    y = _relu(_bn(_conv(x, planes, 1, 1, f"{name}_conv1"), f"{name}_bn1"), f"{name}_act1")
    y = _relu(_bn(_conv(y, planes, 3, strides, f"{name}_conv2"), f"{name}_bn2"), f"{name}_act2")
    y = _bn(_conv(y, out, 1, 1, f"{name}_conv3"), f"{name}_bn3")
    if strides != 1 or int(x.shape[-1]) != out:
        x = _bn(_conv(x, out, 1, strides, f"{name}_downsample_0"), f"{name}_downsample_1")
    return _relu(layers.Add(name=f"{name}_add")([y, x]), f"{name}_act3")


def _basic(x, planes: int, name: str, strides: int = 1):
    y = _relu(_bn(_conv(x, planes, 3, strides, f"{name}_conv1"), f"{name}_bn1"), f"{name}_act1")
    y = _bn(_conv(y, planes, 3, 1, f"{name}_conv2"), f"{name}_bn2")
    if strides != 1 or int(x.shape[-1]) != planes:
        x = _bn(_conv(x, planes, 1, strides, f"{name}_downsample_0"), f"{name}_downsample_1")
    return _relu(layers.Add(name=f"{name}_add")([y, x]), f"{name}_act2")


def _transition(xs: list, channels: tuple, name: str) -> list:
    """The next stage's inputs: existing branches kept (or re-widened by a 3x3 conv-BN-ReLU), one new
    branch per missing resolution from the lowest-resolution one by 3x3 stride-2 conv-BN-ReLUs."""
    out = []
    for i, c in enumerate(channels):
        if i < len(xs):
            x = xs[i]
            if int(x.shape[-1]) != c:
                x = _relu(_bn(_conv(x, c, 3, 1, f"{name}_{i}_0"), f"{name}_{i}_1"), f"{name}_{i}_2")
        else:
            x = xs[-1]
            steps = i + 1 - len(xs)
            for j in range(steps):
                width = c if j == steps - 1 else int(xs[-1].shape[-1])
                x = _conv(x, width, 3, 2, f"{name}_{i}_{j}_0")
                x = _relu(_bn(x, f"{name}_{i}_{j}_1"), f"{name}_{i}_{j}_2")
        out.append(x)
    return out


def _hr_module(xs: list, blocks: tuple, channels: tuple, name: str) -> list:
    """One high-resolution module: basic blocks on every branch, then the multi-resolution fusion."""
    xs = list(xs)
    for i, (n, c) in enumerate(zip(blocks, channels)):
        for b in range(n):
            xs[i] = _basic(xs[i], c, f"{name}_branches_{i}_{b}")
    if len(xs) == 1:
        return xs
    fused = []
    for i, c in enumerate(channels):
        terms = []
        for j, x in enumerate(xs):
            p = f"{name}_fuse_layers_{i}_{j}"
            if j > i:  # lower resolution: 1x1 conv-BN to this width, nearest upsampling
                x = _bn(_conv(x, c, 1, 1, f"{p}_0"), f"{p}_1")
                x = layers.UpSampling2D(2 ** (j - i), interpolation="nearest", name=f"{p}_2")(x)
            elif j < i:  # higher resolution: i - j stride-2 3x3 conv-BNs (ReLU between them)
                for k in range(i - j):
                    last = k == i - j - 1
                    x = _bn(_conv(x, c if last else channels[j], 3, 2, f"{p}_{k}_0"), f"{p}_{k}_1")
                    if not last:
                        x = _relu(x, f"{p}_{k}_2")
            terms.append(x)
        fused.append(_relu(layers.Add(name=f"{name}_fuse_{i}_add")(terms), f"{name}_fuse_act_{i}"))
    return fused


def normalize(inputs):
    """Raw RGB in [0, 255] -> ImageNet mean/std normalisation (the mean of the three for other channel counts)."""
    channels = int(inputs.shape[-1])
    mean = [m * 255.0 for m in _IMAGENET_MEAN_RGB]
    std = [s * 255.0 for s in _IMAGENET_STD_RGB]
    if channels != 3:
        mean, std = [sum(mean) / 3] * channels, [sum(std) / 3] * channels
    return layers.Normalization(mean=mean, variance=[s * s for s in std], name="normalize")(inputs)


def hrnet_features(inputs, backbone: str = DEFAULT_BACKBONE) -> list:
    """HRNet ``backbone`` on ``inputs`` (raw RGB in [0, 255]): the four branches' outputs, strides 4, 8, 16, 32."""
    if backbone not in CONFIGS:
        raise KsegError(f"hrnet has no backbone {backbone!r}: choose one of {', '.join(BACKBONES)}")
    cfg = CONFIGS[backbone]
    x = normalize(inputs)
    x = _relu(_bn(_conv(x, STEM_WIDTH, 3, 2, "conv1"), "bn1"), "act1")
    x = _relu(_bn(_conv(x, 64, 3, 2, "conv2"), "bn2"), "act2")
    n, planes = cfg["stage1"]
    for b in range(n):
        x = _bottleneck(x, planes, f"layer1_{b}")
    xs = [x]
    for s, (modules, blocks, channels) in enumerate(cfg["stages"], start=2):
        xs = _transition(xs, channels, f"transition{s - 1}")
        for m in range(modules):
            xs = _hr_module(xs, blocks, channels, f"stage{s}_{m}")
    return xs


def hrnet(num_classes: int, backbone: str = DEFAULT_BACKBONE, input_shape=(None, None, 3), encoder_weights=None,
          encoder_freeze: bool = False, activation: str | None = "softmax", name: str | None = None):
    """Build an HRNetV2 segmentation model.

    Args:
        backbone: ``hrnet_w18_small``, ``hrnet_w18_small_v2`` (default), ``hrnet_w18``, ``hrnet_w32`` or
            ``hrnet_w48``.
        encoder_weights: ``None``, ``"imagenet"`` (timm's ImageNet checkpoint of the variant, downloaded once
            and checked: :mod:`kseg.models.hub_files`), or the path of a timm checkpoint of the same variant
            (``model.safetensors`` of ``timm/<backbone>.ms_in1k`` on Hugging Face; see
            :mod:`kseg.models.timm_weights`).
        encoder_freeze: make every layer but the segmentation head non-trainable.
        The others as for :func:`kseg.models.unet`.
    """
    if backbone not in CONFIGS:
        raise KsegError(f"hrnet has no backbone {backbone!r}: choose one of {', '.join(BACKBONES)}")
    inputs = keras.Input(check_input_shape(input_shape), name="image")
    xs = hrnet_features(inputs, backbone)
    body = keras.Model(inputs, xs).layers[1:] if encoder_freeze else None
    ups = [xs[0]] + [BilinearUpSampling2D(2 ** i, name=f"upsample_{i}")(x) for i, x in enumerate(xs[1:], start=1)]
    x = layers.Concatenate(name="concat")(ups)
    width = int(x.shape[-1])
    x = layers.Conv2D(width, 1, use_bias=True, kernel_initializer=_kernel_init(), name="last_layer_0")(x)
    x = _relu(_bn(x, "last_layer_1"), "last_layer_2")
    outputs = head(x, num_classes, activation, kernel_size=1, name="last_layer_3", upsample=4)
    model = keras.Model(inputs, outputs, name=name or backbone)
    if encoder_weights is not None:
        from kseg.models.timm_weights import load_timm_checkpoint

        if encoder_weights == "imagenet":
            from kseg.models.hub_files import imagenet_path

            encoder_weights = imagenet_path(backbone)
        load_timm_checkpoint(backbone_layers(model), encoder_weights, skip_prefixes=TIMM_HEAD)
    if body:
        freeze(body)
    return model


# timm's classification head: in its ImageNet checkpoints, with no kseg counterpart
TIMM_HEAD = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")


def backbone_layers(model) -> list:
    """The layers of an :func:`hrnet` model that have a timm counterpart (all with weights but the head's)."""
    return [layer for layer in model.layers
            if layer.weights and layer.name not in HEAD_LAYERS and not isinstance(layer, layers.Normalization)]
