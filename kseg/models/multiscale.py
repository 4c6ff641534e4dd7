"""Learned multi-scale attention: one segmentation model run at several input scales, its predictions merged by
an attention head trained with it.

>>> ms = kseg.models.multiscale(model, mode="hierarchical", train_scales=(0.5, 1.0))

Two modes, after two papers:

- ``"attention"``: "Attention to Scale" (Chen, Yang, Wang, Xu, Yuille, CVPR 2016). The attention head reads
  the features of every scale (concatenated) and gives one score map per scale; their softmax over scales
  weighs the scales' class logits. It is tied to the scales it was trained with.
- ``"hierarchical"``: "Hierarchical Multi-Scale Attention for Semantic Segmentation" (Tao, Sapra, Catanzaro
  2020). The head reads one scale's features and gives one sigmoid map ``a``; a smaller scale's prediction is
  merged with the larger scales' as ``a * L_small + (1 - a) * L_larger``. Trained on two scales, it runs on
  any set at inference (:func:`with_scales`), chained pairwise from the largest scale down.

The model (a :class:`MultiScaleModel`) is a functional Keras model: its input is an RGB batch like the wrapped
model's, its output the merged probabilities at the input's size, so kseg evaluates, predicts, saves, loads
and exports it as any kseg model. Inside, the wrapped model's network (the *trunk*: one nested model, one set
of weights, returning its class logits before the softmax and the features its classifier reads) runs at
each scale (the input resized to ``scale`` times its size, rounded to multiples of 32), the logits and
attention are resized to the input's size and merged (:class:`~kseg.models.multiscale_layers.MultiScaleMerge`),
then the wrapped model's activation gives the probabilities. In training (``model(x, training=True)``, what
``fit`` runs) the model returns each scale's logits too, and its loss adds ``aux_weight`` times the loss of
each scale's own prediction to the merged prediction's (the auxiliary per-scale losses of both papers);
metrics score the merged prediction.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from kseg.errors import KsegError
from kseg.models import surgery
from kseg.models.layers import conv_bn_relu
from kseg.models.multiscale_layers import MODES, MultiScaleMerge, ResizeTo, ScaleResize, scale_weights  # noqa: F401
from kseg.models.resampling import BilinearUpSampling2D

TRUNK = "multiscale_trunk"
HEAD = "multiscale_attention"
MERGE = "multiscale_merge"
OUTPUT = "multiscale_output"


def check_scales(scales, mode: str, what: str = "train_scales") -> tuple[float, ...]:
    """``scales`` as a sorted tuple of floats; at least two, positive, distinct (a one-line KsegError)."""
    if mode not in MODES:
        raise KsegError(f"unknown multiscale mode {mode!r}: choose one of {', '.join(MODES)}")
    vals = sorted(float(s) for s in scales)
    if len(vals) < 2 or any(not v > 0 for v in vals) or len(set(vals)) != len(vals):
        raise KsegError(f"bad {what} {','.join(f'{s:g}' for s in vals)}: give at least two different positive "
                        f"scales, e.g. 0.5,1")
    return tuple(vals)


def _output_layer(model):
    layer = surgery.keras_history(model.outputs[0])[0]
    if not isinstance(layer, layers.Activation):
        raise KsegError(f"model {model.name!r} does not end in an Activation layer (kseg's models end in "
                        f"softmax or sigmoid): cannot find its logits for a multi-scale model")
    return layer


def _flexible(model):
    """``model`` itself if its input takes any height and width, else a copy (same weights) that does."""
    if model.inputs[0].shape[1] is None and model.inputs[0].shape[2] is None:
        return model
    cfg = model.get_config()
    first = cfg["layers"][0]
    first["config"]["batch_shape"] = [None, None, None, first["config"]["batch_shape"][-1]]
    copy = model.__class__.from_config(cfg)
    copy.set_weights(model.get_weights())
    return copy


def trunk(model) -> keras.Model:
    """The wrapped model's network as ``image -> [logits, features]`` (the same layers, any input size): its
    class scores before the output activation, and the features its last convolution (the classifier) reads
    (the logits themselves when no convolution makes them)."""
    model = _flexible(model)
    logits = _output_layer(model).input
    producer = surgery.keras_history(logits)[0]
    while isinstance(producer, BilinearUpSampling2D):
        producer = surgery.keras_history(producer.input)[0]
    features = producer.input if isinstance(producer, layers.Conv2D) else logits
    return keras.Model(model.inputs[0], [logits, features], name=TRUNK)


def attention_head(mode: str, channels: int, num_scales: int, filters: int = 64) -> keras.Model:
    """The attention head: two 3x3 convolutions (``filters`` wide, batch norm, ReLU) and a 1x1 one giving
    one attention logit per pixel (hierarchical: from one scale's features) or one per scale (attention:
    from every scale's features, concatenated)."""
    width = channels if mode == "hierarchical" else channels * num_scales
    x = inputs = keras.Input((None, None, width), name="features")
    x = conv_bn_relu(x, filters, 3, name="attention_conv0")
    x = conv_bn_relu(x, filters, 3, name="attention_conv1")
    x = layers.Conv2D(1 if mode == "hierarchical" else num_scales, 1, name="attention_logits")(x)
    return keras.Model(inputs, x, name=HEAD)


@keras.saving.register_keras_serializable(package="kseg")
class MultiScaleModel(keras.Model):
    """A functional model built by :func:`multiscale`: merged probabilities out; in training it also returns
    each scale's logits (packed after the probabilities on the last axis) for the auxiliary losses."""

    def __init__(self, inputs, outputs, name=None, **kwargs):
        super().__init__(inputs, outputs, name=name, **kwargs)
        merge = self.get_layer(MERGE)
        self.mode, self.scales, self.aux_weight = merge.mode, merge.scales, float(merge.aux_weight)
        self.activation = self.get_layer(OUTPUT).get_config()["activation"]
        per_scale = [self.get_layer(f"multiscale_logits_{i}").output for i in range(len(self.scales))]
        # the same layers, with every scale's logits as outputs too (plain attribute: not tracked twice)
        object.__setattr__(self, "_training_graph", keras.Model(self.inputs[0], [self.outputs[0], *per_scale]))

    def call(self, inputs, training=None, mask=None):
        if not training or not self.aux_weight:
            return super().call(inputs, training=training, mask=mask)
        return ops.concatenate(self._training_graph(inputs, training=True), axis=-1)

    def unpack(self, y_pred):
        """``(merged probabilities, [each scale's logits])`` of what :meth:`call` returned."""
        c = int(self.outputs[0].shape[-1])
        if y_pred.shape[-1] == c:
            return y_pred, []
        return y_pred[..., :c], [y_pred[..., c * (i + 1):c * (i + 2)] for i in range(len(self.scales))]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        merged, per_scale = self.unpack(y_pred)
        loss = super().compute_loss(x, y, merged, sample_weight, training=training)
        if per_scale:
            fn = keras.losses.get(self.loss) if isinstance(self.loss, str) else self.loss
            act = keras.activations.get(self.activation)
            for logits in per_scale:
                loss = loss + self.aux_weight * ops.cast(fn(y, act(logits), sample_weight), loss.dtype)
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, y, self.unpack(y_pred)[0], sample_weight)


def _assemble(trunk_model, head, mode, scales, input_shape, activation, aux_weight, name) -> MultiScaleModel:
    """The multi-scale graph over ``trunk_model`` and ``head`` (both reused as they are: shared weights)."""
    inputs = keras.Input(input_shape, name="image")
    logits, feats = [], []
    for i, s in enumerate(scales):
        x = ScaleResize(s, name=f"multiscale_input_{i}")(inputs)
        lo, f = trunk_model(x)
        logits.append(ResizeTo(dtype="float32", name=f"multiscale_logits_{i}")([lo, inputs]))
        feats.append(f)
    if mode == "hierarchical":  # the largest scale's attention is not used (it takes what the others leave)
        att = [ResizeTo(dtype="float32", name=f"multiscale_attention_{i}")([head(f), inputs])
               for i, f in enumerate(feats[:-1])]
    else:
        ref = feats[min(range(len(scales)), key=lambda i: abs(scales[i] - 1.0))]
        cat = layers.Concatenate(name="multiscale_features")(
            [f if f is ref else ResizeTo(name=f"multiscale_features_{i}")([f, ref]) for i, f in enumerate(feats)])
        att = [ResizeTo(dtype="float32", name="multiscale_attention_0")([head(cat), inputs])]
    merged = MultiScaleMerge(mode, scales, aux_weight=aux_weight, dtype="float32", name=MERGE)(logits + att)
    out = layers.Activation(activation, dtype="float32", name=OUTPUT)(merged)
    return MultiScaleModel(inputs, out, name=name)


def multiscale(model, mode: str = "hierarchical", train_scales=(0.5, 1.0), aux_weight: float = 0.4,
               attention_filters: int = 64, input_shape=None, name: str | None = None) -> MultiScaleModel:
    """``model`` (a kseg segmentation model, built or trained) run at ``train_scales`` and merged by a learned
    attention (``mode``: "hierarchical" or "attention", see the module's docstring).

    The new model shares ``model``'s layers and weights when ``model`` takes any input size (else it uses a
    copy that does, with the same weights); the attention head is new. ``aux_weight`` weighs each scale's
    auxiliary loss in training (0: none); ``attention_filters`` is the head's width (the papers use 256 and
    512); ``input_shape`` defaults to ``model``'s.
    """
    scales = check_scales(train_scales, mode)
    if not aux_weight >= 0:
        raise KsegError(f"bad aux_weight {aux_weight!r}: give 0 or a positive number")
    activation = _output_layer(model).get_config()["activation"]
    net = trunk(model)
    head = attention_head(mode, int(net.outputs[1].shape[-1]), len(scales), attention_filters)
    shape = tuple(input_shape or model.inputs[0].shape[1:])
    return _assemble(net, head, mode, scales, shape, activation, aux_weight, name or f"multiscale_{model.name}")


def is_multiscale(model) -> bool:
    """True for a model :func:`multiscale` built (or one loaded, or copied from one)."""
    return any(la.name == MERGE and isinstance(la, MultiScaleMerge) for la in getattr(model, "layers", []))


def info(model) -> dict:
    """``{"mode", "scales"}`` of a multi-scale model."""
    merge = model.get_layer(MERGE)
    return {"mode": merge.mode, "scales": list(merge.scales)}


def with_scales(model, scales) -> MultiScaleModel:
    """Multi-scale ``model`` at other inference ``scales`` (the same trunk and head: shared weights).

    Hierarchical attention runs at any set of two or more scales (one scale: the trunk alone, see
    :func:`single_scale`); explicit attention only at the scales it was trained with (a KsegError
    otherwise)."""
    merge = model.get_layer(MERGE)
    scales = check_scales(scales, merge.mode, "--scales")
    if scales == merge.scales:
        return model
    if merge.mode == "attention":
        raise KsegError(f"bad --scales {','.join(f'{s:g}' for s in scales)}: this model's explicit attention "
                        f"gives one map per trained scale; run it at {','.join(f'{s:g}' for s in merge.scales)}")
    activation = model.get_layer(OUTPUT).get_config()["activation"]
    return _assemble(model.get_layer(TRUNK), model.get_layer(HEAD), merge.mode, scales,
                     tuple(model.inputs[0].shape[1:]), activation, merge.aux_weight, model.name)


def at_scales(model, scales) -> keras.Model:
    """Multi-scale ``model`` run at inference ``scales`` by its own attention: :func:`with_scales` for two or
    more, the trunk alone (:func:`single_scale`) for one scale of a hierarchical model."""
    scales = [float(s) for s in scales]
    if len(set(scales)) == 1 and model.get_layer(MERGE).mode == "hierarchical":
        return single_scale(model, scales[0])
    return with_scales(model, scales)


def single_scale(model, scale: float = 1.0) -> keras.Model:
    """The trunk of multi-scale ``model`` alone at ``scale``: its own prediction at the input's size."""
    inputs = keras.Input(tuple(model.inputs[0].shape[1:]), name="image")
    x = ScaleResize(float(scale), name="multiscale_input_0")(inputs)
    lo, _ = model.get_layer(TRUNK)(x)
    lo = ResizeTo(dtype="float32", name="multiscale_logits_0")([lo, inputs])
    activation = model.get_layer(OUTPUT).get_config()["activation"]
    return keras.Model(inputs, layers.Activation(activation, dtype="float32", name=OUTPUT)(lo),
                       name=f"{model.name}_at_{scale:g}")


def attention_maps(model) -> keras.Model:
    """image -> the per-scale weights (N, H, W, S) multi-scale ``model`` merges with (summing to 1 at each
    pixel; in the order of ``info(model)["scales"]``)."""
    merge = model.get_layer(MERGE)
    weights = MultiScaleMerge(merge.mode, merge.scales, output="weights", name="multiscale_weights")(merge.input)
    return keras.Model(model.inputs[0], weights, name=f"{model.name}_attention")
