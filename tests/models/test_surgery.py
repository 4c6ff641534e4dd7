"""kseg.models.surgery: each use of a Keras / TensorFlow internal, checked against the installed versions.

Every test fails when an upgrade renames or changes the internal that the function relies on.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np

import keras
import tensorflow as tf

from kseg.models import surgery

REPO = Path(__file__).resolve().parents[2]


def test_only_surgery_touches_keras_internals():
    pattern = re.compile(r"\._(inbound_nodes|keras_history|moments|symbolic_build|maybe_symbolic_build|momentums|"
                         r"velocities|outbound_nodes|get_variable_index|apply_weight_decay|reduction_axes|"
                         r"in_multi_worker_mode|compile_config)\b|\"_(moments|compile_config|inbound_nodes)\"")
    found = [f"{path.relative_to(REPO)}:{i}" for path in sorted((REPO / "kseg").rglob("*.py"))
             if path.name != "surgery.py"
             for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []


def test_inbound_nodes_lists_each_call_with_its_inputs():
    x = keras.Input((4,))
    dense = keras.layers.Dense(4)
    y1 = dense(x)
    y2 = dense(y1)
    nodes = surgery.inbound_nodes(dense)
    assert len(nodes) == 2
    assert nodes[0].input_tensors[0] is x and nodes[1].input_tensors[0] is y1
    assert surgery.keras_history(y2)[:2] == (dense, 1)


class _TwoOutputs(keras.layers.Layer):
    def call(self, x):
        return x, 2.0 * x

    def compute_output_shape(self, shape):
        return shape, shape


def test_keras_history_names_the_layer_call_and_output():
    x = keras.Input((3,))
    layer = _TwoOutputs()
    a, b = layer(x)
    assert surgery.keras_history(a) == (layer, 0, 0)
    assert surgery.keras_history(b) == (layer, 0, 1)
    assert surgery.keras_history(x)[0] is surgery.inbound_nodes(surgery.keras_history(x)[0])[0].operation


def test_synchronise_moments_replaces_the_step_keras_calls(monkeypatch):
    x = np.random.default_rng(0).standard_normal((2, 4, 4, 3)).astype("float32")
    plain = keras.layers.BatchNormalization()
    synced = keras.layers.BatchNormalization()
    plain.build(x.shape)
    synced.build(x.shape)
    assert not surgery.moments_replaced(synced)
    assert surgery.synchronise_moments(synced) is True
    assert surgery.moments_replaced(synced) and not surgery.moments_replaced(plain)
    calls = []
    original = keras.ops.moments

    def spy(*args, **kwargs):
        calls.append(kwargs.get("synchronized", False))
        return original(*args, **kwargs)

    monkeypatch.setattr(keras.ops, "moments", spy)
    got = synced(x, training=True)
    assert calls == [True]  # Keras's training call went through the replaced moments step
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(plain(x, training=True)),
                               rtol=1e-5, atol=1e-5)  # one replica: the local moments
    assert synced.get_config()["synchronized"] is False  # nothing of it is saved


def _compiled_model():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", metrics=["mae"])
    return model


def _dataset():
    x = np.ones((4, 3), "float32")
    return tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(2)


def test_symbolic_build_creates_the_training_state():
    model = _compiled_model()
    assert surgery.can_build_symbolically(model)
    assert not model.optimizer.built
    assert [m.built for m in model.metrics if hasattr(m, "built")] == [False]  # the compiled metrics
    surgery.symbolic_build(model, _dataset().element_spec)
    assert model.optimizer.built and len(model.optimizer.variables) > 1
    assert [m.built for m in model.metrics if hasattr(m, "built")] == [True]


def test_skip_symbolic_build_replaces_the_step_fit_calls():
    model = _compiled_model()
    surgery.skip_symbolic_build(model)
    calls = []
    skipped = model._maybe_symbolic_build
    model._maybe_symbolic_build = lambda *a, **k: calls.append(1) or skipped(*a, **k)
    model.fit(_dataset(), epochs=1, verbose=0)
    assert calls  # fit still calls the step that skip_symbolic_build turns off


def test_in_multi_worker_mode_reads_the_worker_count():
    from tensorflow.python.distribute.collective_all_reduce_strategy import CollectiveAllReduceExtended

    def strategy(workers):
        state = SimpleNamespace(_num_workers=workers)
        method = CollectiveAllReduceExtended._in_multi_worker_mode
        return SimpleNamespace(extended=SimpleNamespace(_in_multi_worker_mode=lambda: method(state)))

    assert surgery.in_multi_worker_mode(strategy(2)) is True
    assert surgery.in_multi_worker_mode(strategy(1)) is False


def test_variable_index_and_adam_slots():
    opt = keras.optimizers.Adam(0.1)
    a, b = keras.Variable(np.zeros(3, "float32")), keras.Variable(np.zeros(2, "float32"))
    opt.build([a, b])
    assert (surgery.variable_index(opt, a), surgery.variable_index(opt, b)) == (0, 1)
    opt.apply([tf.zeros(3), tf.ones(2)], [a, b])
    (ma, va), (mb, vb) = surgery.adam_slots(opt, a), surgery.adam_slots(opt, b)
    np.testing.assert_allclose(np.asarray(mb), [0.1, 0.1], rtol=1e-6)  # (1 - beta_1) * g
    np.testing.assert_allclose(np.asarray(vb), [0.001, 0.001], rtol=1e-6)  # (1 - beta_2) * g^2
    np.testing.assert_array_equal(np.asarray(ma), np.zeros(3))
    assert tuple(va.shape) == (3,)


def test_grouped_weight_decay_is_the_step_keras_applies():
    class Decay(surgery.GroupedWeightDecay, keras.optimizers.SGD):
        def weight_decay_groups(self, variables):
            return {0.0: [v for v in variables if v.name == "kept"], 2.0: [v for v in variables if v.name != "kept"]}

    kept = keras.Variable(np.ones(2, "float32"), name="kept")
    decayed = keras.Variable(np.ones(2, "float32"), name="decayed")
    opt = Decay(learning_rate=0.1, weight_decay=0.5)
    opt.apply([tf.zeros(2), tf.zeros(2)], [kept, decayed])
    np.testing.assert_allclose(np.asarray(kept), [1.0, 1.0])
    np.testing.assert_allclose(np.asarray(decayed), [0.9, 0.9], rtol=1e-6)  # 1 - 0.1 * 0.5 * 2
    assert opt.weight_decay == 0.5

    plain = keras.Variable(np.ones(2, "float32"))
    surgery_default = type("Default", (surgery.GroupedWeightDecay, keras.optimizers.SGD), {})
    surgery_default(learning_rate=0.1, weight_decay=0.5).apply([tf.zeros(2)], [plain])
    np.testing.assert_allclose(np.asarray(plain), [0.95, 0.95], rtol=1e-6)  # no groups: Keras's decay


def test_compile_arguments_are_the_objects_compile_got():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    assert surgery.compile_arguments(model) is None
    opt = keras.optimizers.SGD(0.1)
    model.compile(optimizer=opt, loss="mse", metrics=["mae"])
    args = surgery.compile_arguments(model)
    assert args["optimizer"] is opt and args["loss"] == "mse" and args["metrics"] == ["mae"]
