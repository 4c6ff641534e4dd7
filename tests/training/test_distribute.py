"""tf.distribute: MirroredStrategy on 2 logical CPUs equals one device; 2 workers on 127.0.0.1; --strategy errors.

Each distributed run happens in its own Python process: logical devices and a
multi-worker cluster can only be configured before TensorFlow starts.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from kseg import distribute, train
from kseg.errors import KsegError

# Two logical CPU devices; the same tiny U-Net trained for one step and evaluated,
# once without a strategy and once under MirroredStrategy. Prints one JSON line.
MIRRORED_VS_ONE_DEVICE = r"""
import json, sys
from kseg import distribute
devices = distribute.logical_cpus(2)
import keras
import numpy as np
from kseg import losses, metrics, models
from kseg.data import load_iccv09, make_dataset

data, cache = sys.argv[1], sys.argv[2]
ds = load_iccv09(data, mask="surfaces", cache_dir=cache)
paths, labels = list(ds.image_paths), list(ds.labels)

def run(strategy):
    keras.utils.set_random_seed(0)
    train = make_dataset(paths, labels, 3, (32, 32), 4, training=True, seed=0)
    evalset = make_dataset(paths, labels, 3, (32, 32), 4)  # 6 images: batches of 4 and 2
    if strategy is not None:
        train, evalset = distribute.shard_by_data(train), distribute.shard_by_data(evalset)
    with distribute.scope(strategy):
        model = models.build("unet", backbone="plain", num_classes=3, input_shape=(32, 32, 3),
                             decoder_filters=(16, 8, 8, 8), backbone_kwargs={"filters": (8, 8, 16, 16, 16)})
        distribute.sync_batch_norm(model, strategy)
        cm_metrics = [metrics.PixelAccuracy(3), metrics.MeanIoU(3)]
        model.compile(optimizer=keras.optimizers.SGD(0.05), metrics=cm_metrics,
                      loss=distribute.replica_loss(losses.get("ce"), strategy))
        distribute.build_for_fit(model, strategy, train)
    hist = model.fit(train, steps_per_epoch=1, epochs=1, verbose=0)
    ev = model.evaluate(evalset, verbose=0, return_dict=True)
    cm = np.asarray(keras.ops.convert_to_numpy(cm_metrics[1].matrix))
    return {"loss": float(hist.history["loss"][0]), "eval": {k: float(v) for k, v in ev.items()},
            "cm": cm.tolist(), "replicas": 1 if strategy is None else strategy.num_replicas_in_sync,
            "weights": [np.asarray(v) for v in model.get_weights()]}

one = run(None)
mirrored = run(distribute.get_strategy("mirrored", devices=devices))
diff = max(float(np.max(np.abs(a - b))) for a, b in zip(one.pop("weights"), mirrored.pop("weights")))
print("RESULT " + json.dumps({"one": one, "mirrored": mirrored, "devices": devices, "weight_diff": diff}))
"""


def _env(tmp_path, **extra):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3",
           "KSEG_CACHE_DIR": str(tmp_path / "cache")}
    for name in ("TF_CONFIG", "TPU_NAME", "COLAB_TPU_ADDR"):
        env.pop(name, None)
    return {**env, **extra}


def test_mirrored_on_two_cpus_equals_one_device(tiny_iccv09, tmp_path):
    res = subprocess.run([sys.executable, "-c", MIRRORED_VS_ONE_DEVICE, str(tiny_iccv09), str(tmp_path / "c")],
                         cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    one, mirrored = out["one"], out["mirrored"]
    assert len(out["devices"]) == 2 and mirrored["replicas"] == 2 and one["replicas"] == 1
    # the first step's loss: each replica's loss over its half of the batch, averaged
    assert mirrored["loss"] == pytest.approx(one["loss"], abs=1e-5)
    # one step of the same gradient (all-reduced over the replicas) leaves the same weights
    assert out["weight_diff"] < 1e-5
    # the evaluation's confusion matrix: summed over both replicas, equal to one device's
    cm_one, cm_mirrored = np.array(one["cm"]), np.array(mirrored["cm"])
    np.testing.assert_array_equal(cm_mirrored, cm_one)
    assert cm_one.sum() == 6 * (32 * 32 - 2)  # every labelled pixel of the 6 images (2 unknown per image)
    for key in ("miou", "pixel_accuracy", "loss"):
        assert mirrored["eval"][key] == pytest.approx(one["eval"][key], abs=1e-5), key


# A late-starting variable (first Dense frozen for 3 epochs of 2 steps) under kseg's per-variable Adam steps,
# on one device and under MirroredStrategy. Prints one JSON line.
PER_VARIABLE_STEPS_MIRRORED = r"""
import json
from kseg import distribute
devices = distribute.logical_cpus(2)
import keras
import numpy as np
from kseg import optimizers

def run(strategy):
    keras.utils.set_random_seed(0)
    with distribute.scope(strategy):
        inp = keras.Input((4,))
        first, second = keras.layers.Dense(3), keras.layers.Dense(2)
        model = keras.Model(inp, second(first(inp)))
        model.compile(optimizers.Adam(1e-2, per_variable_steps=True), loss="mse")
        model.optimizer.build(model.trainable_variables)
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    y = np.zeros((8, 2), "float32")
    first.trainable = False
    model.fit(x, y, epochs=3, batch_size=4, verbose=0)
    first.trainable = True
    model.make_train_function(force=True)
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    return model.get_weights(), [int(np.asarray(v.numpy())) for v in model.optimizer._first_steps]

w_one, steps_one = run(None)
w_mirrored, steps_mirrored = run(distribute.get_strategy("mirrored", devices=devices))
diff = max(float(np.max(np.abs(a - b))) for a, b in zip(w_one, w_mirrored))
print("RESULT " + json.dumps({"one": steps_one, "mirrored": steps_mirrored, "weight_diff": diff}))
"""


def test_per_variable_adam_steps_under_mirrored_strategy(tmp_path):
    res = subprocess.run([sys.executable, "-c", PER_VARIABLE_STEPS_MIRRORED], cwd=REPO, env=_env(tmp_path),
                         capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(next(ln for ln in res.stdout.splitlines() if ln.startswith("RESULT "))[len("RESULT "):])
    # the first Dense's kernel and bias started at step 7 (after 3 epochs of 2 steps), the second's at 1
    assert out["one"] == out["mirrored"] == [7, 7, 1, 1]
    assert out["weight_diff"] < 1e-5


def _free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def test_two_workers_train_and_only_the_chief_writes(tiny_iccv09, tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs, outs = [], []
    for i in range(2):
        out = tmp_path / f"out{i}"
        outs.append(out)
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        args = [sys.executable, "-m", "kseg.train", "--strategy", "multiworker", "--data", str(tiny_iccv09),
                "--size", "32", "--epochs", "1", "--batch-size", "4", "--backbone", "resnet18", "--no-export",
                "--verbose", "2", "--out", str(out)]
        procs.append(subprocess.Popen(args, cwd=REPO, env=_env(tmp_path, TF_CONFIG=tf_config),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=420)
            results.append((p.returncode, stdout, stderr))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for i, (rc, stdout, stderr) in enumerate(results):
        assert rc == 0, f"worker {i}:\n{stdout[-2000:]}\n{stderr[-3000:]}"
        assert "with 2 replicas; global batch 4" in stdout
    chief, other = outs
    assert (chief / "best.keras").exists() and (chief / "metrics.json").exists()
    assert (chief / "history.csv").exists()
    # the other worker wrote its copies into a folder it removed: nothing is left in its --out
    assert not (other / "best.keras").exists()
    assert list(other.iterdir()) == []
    # both workers saw the same epoch (their logs are all-reduced; validation runs whole on each)
    epoch_lines = [next(ln for ln in out.splitlines() if " - loss: " in ln) for _, out, _ in results]
    strip = [ln.split(" - loss: ")[1] for ln in epoch_lines]
    assert strip[0] == strip[1]
    report = json.loads((chief / "metrics.json").read_text())
    assert report["val_images"] == 1 and report["train_images"] == 5


def test_strategy_names():
    assert distribute.resolve("none") == "none"
    assert distribute.get_strategy("none") is None
    with pytest.raises(KsegError, match="unknown --strategy 'gpu'"):
        distribute.resolve("gpu")


def test_auto_is_multiworker_with_a_tf_config_cluster(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
                                                "task": {"type": "worker", "index": 1}}))
    assert distribute.resolve("auto") == "multiworker"
    assert distribute.task() == ("worker", 1)
    assert not distribute.is_chief()
    assert distribute.worker_dir("/r/out").as_posix() == "/r/out/.workertemp_worker_1"
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["h:1"], "worker": ["h:2"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert not distribute.is_chief()  # with a chief task, worker 0 is not the chief
    monkeypatch.delenv("TF_CONFIG")
    assert distribute.is_chief() and distribute.worker_dir("/r/out").as_posix() == "/r/out"


@pytest.mark.parametrize("tf_config,message", [
    ("{not json", "TF_CONFIG is not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', 'needs TF_CONFIG with a "cluster"'),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}',
     "index 3 is not in the cluster"),
])
def test_bad_tf_config_is_a_user_error(tf_config, message, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(KsegError, match=message):
        distribute.get_strategy("multiworker")


@pytest.mark.parametrize("args,message", [
    (["--strategy", "gpus"], "unknown --strategy 'gpus': choose one of auto, none, mirrored, multiworker, tpu"),
])
def test_cli_rejects_an_unknown_strategy(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        train.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_tpu_without_a_tpu_is_a_clear_error(tmp_path):
    """No TPU here: --strategy tpu must stop with one line, not a traceback. (The TPU path itself is untested.)"""
    res = subprocess.run([sys.executable, "-m", "kseg.train", "--strategy", "tpu", "--out", str(tmp_path / "o")],
                         cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("kseg: error: --strategy tpu: no TPU found")


def test_local_validation_uses_the_averaged_weights_with_ema():
    """The multi-worker validation callback, given the fit's SwapEMAWeights, scores the averaged weights (what
    Keras's own validation does with --ema) and leaves the trained weights in the model."""
    import keras
    import tensorflow as tf

    from kseg import optimizers

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 8)).astype("float32"), rng.normal(size=(32, 1)).astype("float32")
    keras.utils.set_random_seed(1)
    m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    m.compile(optimizers.Adam(0.05, use_ema=True, ema_momentum=0.8), loss="mse")
    swap = keras.callbacks.SwapEMAWeights()
    val = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    check = distribute.local_validation(val, keras.losses.MeanSquaredError(), [], ema=swap)
    logs = {}

    class Grab(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, epoch_logs=None):
            logs.update(epoch_logs, trained=[w.copy() for w in self.model.get_weights()])

    m.fit(x, y, batch_size=8, epochs=1, callbacks=[check, swap, Grab()], verbose=0)
    # fit ends by writing the averages into the model: m now holds the averaged weights
    np.testing.assert_allclose(logs["val_loss"], m.evaluate(x, y, verbose=0), rtol=1e-5)
    assert max(float(np.abs(a - b).max()) for a, b in zip(logs["trained"], m.get_weights())) > 1e-3
