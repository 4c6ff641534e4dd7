"""Scale out with tf.distribute: one GPU, many GPUs, many machines, a TPU.

``python -m kseg.train --strategy NAME`` picks one of:

- ``none``         no strategy: TensorFlow's default (one device);
- ``mirrored``     :class:`tf.distribute.MirroredStrategy` across this machine's GPUs
                   (or its logical CPU devices when it has no GPU and more than one CPU device);
- ``multiworker``  :class:`tf.distribute.MultiWorkerMirroredStrategy` configured from the
                   ``TF_CONFIG`` environment variable (one process per machine);
- ``tpu``          :class:`tf.distribute.TPUStrategy` on the TPU that :func:`tpu_address` names
                   (``TPU_NAME``, Colab's ``COLAB_TPU_ADDR``, or a TPU VM's own); untested here;
- ``auto``         ``multiworker`` when ``TF_CONFIG`` names more than one task, else
                   ``mirrored`` when there is more than one GPU, else ``none``.

Under a strategy the model, optimizer and metrics are created in ``strategy.scope()``;
``--batch-size`` is the global batch (each of the N replicas gets batch/N); the metrics'
confusion matrices are ``SyncOnRead`` variables with SUM aggregation, so a score read
after an epoch is the score over every replica's pixels. In a multi-worker run every
worker computes the same things (saving a model may read distributed variables, a
collective operation), but only the chief writes into ``--out``: the others write into
:func:`worker_dir` and remove it when the run finishes. Keras 3 needs help with the
multi-worker case (see :func:`build_for_fit` and :func:`local_validation`).
"""

from __future__ import annotations

import json
import os

from kseg.errors import KsegError

STRATEGIES = ("auto", "none", "mirrored", "multiworker", "tpu")


def tf_config() -> dict:
    """The parsed ``TF_CONFIG`` environment variable ({} when unset); a bad one raises KsegError."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError as err:
        raise KsegError(f"TF_CONFIG is not valid JSON ({err.msg} at character {err.pos})") from None
    if not isinstance(cfg, dict):
        raise KsegError("TF_CONFIG must be a JSON object with 'cluster' and 'task'")
    return cfg


def _check_tf_config(cfg: dict) -> None:
    cluster, task = cfg.get("cluster"), cfg.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise KsegError('--strategy multiworker needs TF_CONFIG with a "cluster", e.g. '
                        '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                        '"task": {"type": "worker", "index": 0}}')
    if not isinstance(task, dict) or "type" not in task:
        raise KsegError('TF_CONFIG has no "task": give {"type": "worker", "index": I} for this process')
    kind, index = task["type"], task.get("index", 0)
    members = cluster.get(kind)
    if not isinstance(members, list) or not isinstance(index, int) or not 0 <= index < len(members):
        raise KsegError(f"TF_CONFIG task {kind!r} index {index!r} is not in the cluster's {kind!r} list")


def _cluster_size(cfg: dict) -> int:
    cluster = cfg.get("cluster") or {}
    return sum(len(v) for k, v in cluster.items() if k in ("chief", "worker") and isinstance(v, list))


def task() -> tuple[str | None, int]:
    """This process's (task type, index) from ``TF_CONFIG``; (None, 0) when it has none."""
    t = tf_config().get("task") or {}
    return t.get("type"), int(t.get("index", 0) or 0)


def is_chief(strategy=None) -> bool:
    """True unless this process is a non-chief worker of a multi-worker run.

    The chief is the ``chief`` task when the cluster has one, else worker 0
    (tf.distribute's convention). With a ``strategy``, its cluster resolver
    decides (a single-machine strategy always runs on the chief); without one,
    ``TF_CONFIG`` does.
    """
    if strategy is not None:
        resolver = getattr(strategy, "cluster_resolver", None)
        kind = getattr(resolver, "task_type", None)
        if not kind:
            return True
        cluster = resolver.cluster_spec().as_dict()
        index = int(getattr(resolver, "task_id", 0) or 0)
    else:
        cfg = tf_config()
        kind, index = task()
        cluster = cfg.get("cluster") or {}
        if kind is None:
            return True
    if kind == "chief":
        return True
    if kind == "worker":
        return "chief" not in cluster and index == 0
    return False  # evaluator, ps: never write the run's outputs


def worker_dir(out, chief: bool | None = None):
    """Where this worker writes: ``out`` for the chief, ``out/.workertemp_<type>_<index>`` for the others.

    The non-chief's folder keeps its copies of the checkpoints and the resume
    state (a multi-worker run resumes only when every worker resumes); remove it
    when the run finishes.
    """
    from pathlib import Path

    out = Path(out)
    if is_chief() if chief is None else chief:
        return out
    kind, index = task()
    return out / f".workertemp_{kind or 'worker'}_{index}"


def gpus() -> list:
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def resolve(name: str) -> str:
    """The concrete strategy name for ``name`` (``auto`` decided from TF_CONFIG and the GPUs)."""
    if name not in STRATEGIES:
        raise KsegError(f"unknown --strategy {name!r}: choose one of {', '.join(STRATEGIES)}")
    if name != "auto":
        return name
    if _cluster_size(tf_config()) > 1:
        return "multiworker"
    return "mirrored" if len(gpus()) > 1 else "none"


def get_strategy(name: str = "auto", devices=None):
    """A ``tf.distribute.Strategy`` for ``name`` (see the module's docstring), or None for ``none``.

    Create it before any other TensorFlow work in the process: MultiWorkerMirroredStrategy
    configures the runtime's collective operations, which must happen at start-up.
    ``devices`` (mirrored only) names the devices to mirror across, e.g. ``["/cpu:0", "/cpu:1"]``.
    """
    name = resolve(name)
    if name == "none":
        return None
    if name == "multiworker":
        _check_tf_config(tf_config())
    import tensorflow as tf

    if name == "mirrored":
        if devices is None and not gpus():
            cpus = tf.config.list_logical_devices("CPU")
            devices = [d.name for d in cpus] if len(cpus) > 1 else None
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multiworker":
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except (RuntimeError, ValueError) as err:
            raise KsegError(f"cannot start MultiWorkerMirroredStrategy from TF_CONFIG: {err} "
                            "(create the strategy at program start; check the addresses)") from None
    # tpu
    tpu = tpu_address()
    if tpu is None:
        raise KsegError("--strategy tpu: no TPU found (no TPU_NAME or COLAB_TPU_ADDR, no local TPU device); "
                        "on Colab pick Runtime > Change runtime type > TPU, on a Cloud TPU VM run on the VM")
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise KsegError(f"--strategy tpu: cannot reach the TPU {tpu!r} ({first})") from None
    return tf.distribute.TPUStrategy(resolver)


def tpu_address() -> str | None:
    """The TPU to connect to: ``TPU_NAME``, Colab's ``COLAB_TPU_ADDR``, ``"local"`` on a TPU VM, else None.

    Looks only at the environment and /dev: no network request is made to find one.
    """
    import glob

    if os.environ.get("TPU_NAME"):
        return os.environ["TPU_NAME"]
    if os.environ.get("COLAB_TPU_ADDR"):
        return "grpc://" + os.environ["COLAB_TPU_ADDR"]
    if glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*"):
        return "local"
    return None


def shard_by_data(dataset):
    """``dataset`` with the DATA auto-shard policy: each worker keeps every N-th batch.

    kseg's pipelines start from tensors of file paths, not from files tf.data can
    split, so FILE sharding does not apply; DATA sharding gives every worker its
    own part of each global batch. A dataset of None stays None.
    """
    if dataset is None:
        return None
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def logical_cpus(n: int = 2) -> list[str]:
    """Split the CPU into ``n`` logical devices (for tests); call before TensorFlow initialises its devices.

    Returns the device names, e.g. ``["/device:CPU:0", "/device:CPU:1"]``.
    """
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def scope(strategy):
    """``strategy.scope()``, or a context that does nothing for None."""
    import contextlib

    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def sync_batch_norm(model, strategy=None):
    """Make every BatchNormalization layer of ``model`` use the global batch's statistics.

    With N replicas each replica sees batch/N images; segmentation batches are
    small, so per-replica statistics would be noisy and training would differ
    from one device's. Synchronised batch normalisation (an all-reduce of the
    moments per layer while training) makes a step under the strategy compute
    what one device computes on the whole batch. Does nothing without a
    strategy or with one replica. Returns ``model``.
    """
    from kseg.models.layers import batch_norm_layers

    if strategy is None or strategy.num_replicas_in_sync < 2:
        return model
    for layer in batch_norm_layers(model):
        _synchronise(layer)
    return model


def _synchronise(layer) -> None:
    """Make one BatchNormalization layer compute the global batch's moments while training.

    The layer's ``synchronized`` option would do it, but it is saved in the layer's
    config, and a checkpoint holding ``synchronized=True`` loads under TensorFlow
    only; so, where this Keras has the hook, only the layer's moments step is
    replaced (not saved: :func:`kseg.models.surgery.synchronise_moments`), and its
    config stays that of an ordinary layer.
    """
    from kseg.models import surgery

    if not surgery.synchronise_moments(layer):
        layer.synchronized = True


def replica_loss(loss, strategy=None):
    """``loss`` made right for ``strategy``: each replica's value divided by the number of replicas.

    Keras sums the replicas' gradients and, for the progress log, multiplies each
    replica's loss back by the number of replicas; it divides a loss by that
    number itself only when the loss returns per-sample values. kseg's losses
    reduce over the whole batch and return a scalar, so this wrapper does the
    division: a step's gradient and logged loss are then the mean of the
    replicas' (which is one device's on the whole batch when the replicas hold
    as many labelled pixels). Returns ``loss`` itself without a strategy or with
    one replica.
    """
    if strategy is None or strategy.num_replicas_in_sync < 2:
        return loss
    import keras
    import tensorflow as tf

    class _ReplicaMean(keras.losses.Loss):
        def __init__(self):
            super().__init__(name=getattr(loss, "name", None) or "loss")
            self.inner = loss

        def call(self, y_true, y_pred):
            return self.inner(y_true, y_pred)

        def __call__(self, y_true, y_pred, sample_weight=None):
            value = self.inner(y_true, y_pred, sample_weight)
            n = tf.distribute.get_strategy().num_replicas_in_sync
            return value / tf.cast(n, value.dtype) if n > 1 else value

    return _ReplicaMean()


def build_for_fit(model, strategy, dataset):
    """Create the compiled model's optimizer, loss and metric state in ``strategy``'s scope now.

    Keras 3 builds that state on the first ``fit``/``evaluate`` under a strategy by
    pulling one batch from the distributed dataset and reducing it across replicas
    (Keras's symbolic build, :mod:`kseg.models.surgery`); across workers that reduction fails
    (keras-team/keras#20585), and on one machine it costs the first shuffled
    order of the data. Here the state is built from ``dataset.element_spec``
    alone, and that per-call step is turned off for this model.

    Across workers Keras also averages each step's logs over the replicas along
    axis 0, which scalars do not have; the steps here return them with shape (1,),
    so every worker sees the same per-batch values. (The epoch's logs, which pick
    the best checkpoint, are read from the metrics' variables, summed over every
    replica.) Does nothing without a strategy. Returns ``model``.
    """
    from kseg.models import surgery

    if strategy is None:
        return model
    if not surgery.can_build_symbolically(model):
        return model  # another Keras: leave it to its own building
    with strategy.scope():
        surgery.symbolic_build(model, dataset.element_spec)
    surgery.skip_symbolic_build(model)
    if multi_worker(strategy):
        model.train_step = _logs_with_an_axis(model.train_step)
        model.test_step = _logs_with_an_axis(model.test_step)
    return model


def _logs_with_an_axis(step):
    import tensorflow as tf

    def wrapped(data):
        logs = step(data)
        return tf.nest.map_structure(lambda v: tf.reshape(v, [1]) if v.shape.rank == 0 else v, logs)

    return wrapped


def multi_worker(strategy) -> bool:
    """True for a MultiWorkerMirroredStrategy that spans more than one worker."""
    import tensorflow as tf

    from kseg.models import surgery

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    return surgery.in_multi_worker_mode(strategy)


def local_validation(val_ds, loss, metrics, ema=None):
    """A callback that validates on this worker alone and puts ``val_*`` into the epoch's logs.

    Across workers, Keras splits each validation batch between the workers, and
    a worker left without images gets an empty batch, which TensorFlow's CPU
    convolutions mishandle; and the validation set is small next to the
    training set. So in a multi-worker run every worker evaluates the whole
    validation set itself (the same weights and data give every worker the same
    logs, so every worker makes the same checkpoint decisions): ``val_loss`` is
    the batch-size-weighted mean of ``loss`` over the batches, as Keras computes
    it on one device, and each of ``metrics`` (copied from its config) is
    accumulated over the whole set. Put the callback first, before those that read
    the logs, and give ``fit`` no ``validation_data``. ``ema``: the fit's
    ``keras.callbacks.SwapEMAWeights``, if any; validation then uses the averaged weights, as Keras's does.
    """
    import keras
    import numpy as np

    from kseg.optimizers import averaged_weights

    fresh = [type(m).from_config(m.get_config()) for m in metrics]

    class _LocalValidation(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs is None:
                return
            for m in fresh:
                m.reset_state()
            total, count = 0.0, 0
            with averaged_weights(ema):
                for x, y in val_ds:
                    pred = self.model(x, training=False)
                    n = int(x.shape[0])
                    total += float(np.asarray(loss(y, pred))) * n
                    count += n
                    for m in fresh:
                        m.update_state(y, pred)
            logs["val_loss"] = total / max(count, 1)
            for m in fresh:
                logs["val_" + m.name] = float(np.asarray(m.result()))

    return _LocalValidation()


def barrier(strategy) -> None:
    """Wait until every worker of a multi-worker ``strategy`` gets here (a one-number all-reduce).

    The workers end a run together: a worker that exits while another still
    writes its outputs is reported to that one as crashed. Does nothing
    otherwise.
    """
    if not multi_worker(strategy):
        return
    import tensorflow as tf

    strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)
