"""kseg.optimizers: Adam / AdamW with TensorFlow's fused kernel give Keras's updates."""

from __future__ import annotations

import numpy as np
import pytest

import keras
import tensorflow as tf

from kseg import optimizers


def _run(opt, steps=5, seed=0):
    """Apply ``steps`` random gradients to three variables; their values and the optimizer's moments."""
    rng = np.random.default_rng(seed)
    shapes = [(3, 3, 4, 5), (5,), (7, 2)]
    vs = [keras.Variable(rng.standard_normal(s).astype("float32"), name=f"v{i}") for i, s in enumerate(shapes)]
    grads = [[tf.constant(rng.standard_normal(s).astype("float32")) for s in shapes] for _ in range(steps)]
    opt.build(vs)

    @tf.function
    def apply(gs):
        opt.apply(gs, vs)

    for gs in grads:
        apply(gs)
    moments = [np.asarray(m) for m in opt._momentums] + [np.asarray(v) for v in opt._velocities]
    return [np.asarray(v) for v in vs], moments


@pytest.mark.parametrize("make", [
    lambda o: o.Adam(1e-2),
    lambda o: o.Adam(keras.optimizers.schedules.ExponentialDecay(1e-2, 2, 0.5), beta_1=0.8, beta_2=0.95,
                     epsilon=1e-4),
    lambda o: o.AdamW(1e-2, weight_decay=0.1),
])
def test_fused_adam_equals_keras(make):
    want_vars, want_moments = _run(make(keras.optimizers))
    got_vars, got_moments = _run(make(optimizers))
    for w, g in zip(want_vars + want_moments, got_vars + got_moments):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    # the values moved: the comparison is not between two untouched copies
    assert not np.allclose(got_vars[0], _run(make(optimizers), steps=0)[0][0])


def _traced_op_types(opt):
    v = keras.Variable(np.ones((4, 4), "float32"))
    opt.build([v])
    fn = tf.function(lambda g: opt.apply([g], [v]))
    graph_def = fn.get_concrete_function(tf.TensorSpec((4, 4), tf.float32)).graph.as_graph_def()
    # the op types of the traced graph and of every function it calls
    return {n.op for n in graph_def.node} | {n.op for f in graph_def.library.function for n in f.node_def}


def test_fused_kernel_is_what_runs(monkeypatch):
    assert "ResourceApplyAdam" in _traced_op_types(optimizers.Adam(1e-3))
    assert "ResourceApplyAdam" not in _traced_op_types(optimizers.Adam(1e-3, amsgrad=True))  # Keras's step
    monkeypatch.setenv("KSEG_FUSED_ADAM", "0")
    assert "ResourceApplyAdam" not in _traced_op_types(optimizers.Adam(1e-3))


def test_amsgrad_falls_back_to_keras():
    want, _ = _run(keras.optimizers.Adam(1e-2, amsgrad=True))
    got, _ = _run(optimizers.Adam(1e-2, amsgrad=True))
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=1e-6)


def test_saved_with_a_model_and_resumed(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizers.AdamW(1e-2, weight_decay=1e-3), loss="mse")
    x, y = np.ones((8, 4), "float32"), np.zeros((8, 2), "float32")
    model.fit(x, y, epochs=2, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded.optimizer) is optimizers.AdamW
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 2
    np.testing.assert_allclose(np.asarray(loaded.optimizer._momentums[0]), np.asarray(model.optimizer._momentums[0]))
    loaded.fit(x, y, epochs=1, verbose=0)
    model.fit(x, y, epochs=1, verbose=0)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)


# --------------------------------------------------------------------------- per-variable steps

@pytest.mark.parametrize("fused", ["1", "0"])
@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
def test_per_variable_steps_change_nothing_when_all_variables_train_from_the_start(cls, fused, monkeypatch):
    monkeypatch.setenv("KSEG_FUSED_ADAM", fused)
    kw = {"weight_decay": 0.1} if cls == "AdamW" else {}
    want_vars, want_moments = _run(getattr(keras.optimizers, cls)(1e-2, **kw))
    got_vars, got_moments = _run(getattr(optimizers, cls)(1e-2, per_variable_steps=True, **kw))
    for w, g in zip(want_vars + want_moments, got_vars + got_moments):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fused", ["1", "0"])
def test_a_variable_that_starts_late_takes_a_fresh_adams_steps(fused, monkeypatch):
    """Built on [a, b], 216 steps on a alone (3 epochs of 72), then 6 on both: b follows a fresh Adam started
    on it then; without per-variable steps its updates are larger (Keras's global bias correction)."""
    monkeypatch.setenv("KSEG_FUSED_ADAM", fused)
    rng = np.random.default_rng(0)
    ga = [tf.constant(rng.standard_normal(5).astype("float32")) for _ in range(222)]
    gb = [tf.constant(rng.standard_normal((3, 2)).astype("float32")) for _ in range(6)]
    b0 = rng.standard_normal((3, 2)).astype("float32")

    def late(opt):
        a, b = keras.Variable(np.zeros(5, "float32")), keras.Variable(b0)
        opt.build([a, b])
        only_a = tf.function(lambda g: opt.apply([g], [a]))
        both = tf.function(lambda g1, g2: opt.apply([g1, g2], [a, b]))
        for g in ga[:216]:
            only_a(g)
        for g1, g2 in zip(ga[216:], gb):
            both(g1, g2)
        return np.asarray(b)

    fresh_opt, b = keras.optimizers.Adam(1e-2), keras.Variable(b0)
    fresh_opt.build([b])
    step = tf.function(lambda g: fresh_opt.apply([g], [b]))
    for g in gb:
        step(g)
    want = np.asarray(b)
    np.testing.assert_allclose(late(optimizers.Adam(1e-2, per_variable_steps=True)), want, rtol=1e-5, atol=1e-6)
    global_count = late(optimizers.Adam(1e-2))
    assert np.abs(global_count - b0).mean() > 1.3 * np.abs(want - b0).mean()


def test_per_variable_steps_are_saved_and_resumed(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizers.Adam(1e-2, per_variable_steps=True), loss="mse")
    x, y = np.ones((8, 4), "float32"), np.zeros((8, 2), "float32")
    model.fit(x, y, epochs=2, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.optimizer.per_variable_steps is True
    assert [int(v) for v in loaded.optimizer._first_steps] == [int(v) for v in model.optimizer._first_steps] == [1, 1]
    loaded.fit(x, y, epochs=1, verbose=0)
    model.fit(x, y, epochs=1, verbose=0)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)


# --------------------------------------------------------------------------- per-variable learning-rate factors

def _two_variables_one_step(opt, grad=1.0, steps=1):
    """Variables ``enc`` and ``dec`` (same value, same gradient): how far each moved after ``steps`` steps."""
    enc = keras.Variable(np.full((3, 2), 2.0, "float32"), name="enc")
    dec = keras.Variable(np.full((3, 2), 2.0, "float32"), name="dec")
    opt.build([enc, dec])
    g = tf.constant(np.full((3, 2), grad, "float32"))
    step = tf.function(lambda: opt.apply([g, g], [enc, dec]))
    for _ in range(steps):
        step()
    return 2.0 - np.asarray(enc), 2.0 - np.asarray(dec)


@pytest.mark.parametrize("fused", ["1", "0"])
@pytest.mark.parametrize("make", [
    lambda **kw: optimizers.Adam(1e-2, **kw),
    lambda **kw: optimizers.Adam(1e-2, per_variable_steps=True, **kw),
    lambda **kw: optimizers.AdamW(1e-2, weight_decay=0.0, **kw),
    lambda **kw: optimizers.SGD(1e-2, momentum=0.9, **kw),
])
def test_lr_multipliers_scale_the_named_variables_steps(make, fused, monkeypatch):
    monkeypatch.setenv("KSEG_FUSED_ADAM", fused)
    moved_enc, moved_dec = _two_variables_one_step(make(lr_multipliers={"enc": 0.1}), steps=3)
    assert np.all(moved_dec > 1e-3)  # the unscaled variable took real steps
    np.testing.assert_allclose(moved_enc, 0.1 * moved_dec, rtol=1e-4)
    # without factors both move alike: the difference above is the factor's
    plain_enc, plain_dec = _two_variables_one_step(make(), steps=3)
    np.testing.assert_allclose(plain_enc, plain_dec, rtol=1e-6)
    np.testing.assert_allclose(plain_dec, moved_dec, rtol=1e-6)


@pytest.mark.parametrize("cls", ["AdamW", "SGD"])
def test_lr_multipliers_scale_weight_decay_too(cls):
    """With a zero gradient only the decoupled decay moves the weights: w * weight_decay * lr * factor."""
    opt = getattr(optimizers, cls)(1e-2, weight_decay=0.5, lr_multipliers={"enc": 0.1})
    moved_enc, moved_dec = _two_variables_one_step(opt, grad=0.0)
    np.testing.assert_allclose(moved_dec, 2.0 * 0.5 * 1e-2, rtol=1e-3)  # float32 differences of 2.0
    np.testing.assert_allclose(moved_enc, 2.0 * 0.5 * 1e-2 * 0.1, rtol=1e-3)
    assert opt.weight_decay == 0.5  # restored after the traced step


def test_lr_multipliers_are_checked_and_saved_with_the_model(tmp_path):
    with pytest.raises(ValueError, match="positive"):
        optimizers.Adam(1e-2, lr_multipliers={"enc": 0.0})
    inputs = keras.Input((4,))
    enc = keras.layers.Dense(3, name="enc")
    model = keras.Model(inputs, keras.layers.Dense(2, name="dec")(enc(inputs)))
    model.compile(optimizers.AdamW(1e-2, weight_decay=1e-3, lr_multipliers={"enc/kernel": 0.1, "enc/bias": 0.1}),
                  loss="mse")
    x, y = np.ones((8, 4), "float32"), np.zeros((8, 2), "float32")
    model.fit(x, y, epochs=2, verbose=0)
    assert sorted(f for f in model.optimizer._lr_factors) == [0.1, 0.1, 1.0, 1.0]
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.optimizer.lr_multipliers == {"enc/kernel": 0.1, "enc/bias": 0.1}
    loaded.fit(x, y, epochs=1, verbose=0)
    model.fit(x, y, epochs=1, verbose=0)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)
