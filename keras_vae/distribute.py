"""Scaling out with TensorFlow's own engine, `tf.distribute`: strategies, mixed precision,
learning-rate scaling, and the chief/worker plumbing multi-worker training needs.

    from keras_vae import distribute
    strategy = distribute.get_strategy("mirrored")        # before any other TensorFlow work
    distribute.set_mixed_precision("mixed_float16")       # before building the model
    with strategy.scope():
        vae = kv.VAE.kingma_welling(784, 20)
        lr = distribute.scaled_learning_rate(1e-3, global_batch=100 * strategy.num_replicas_in_sync)
        vae.compile(optimizer=keras.optimizers.Adam(lr))
    vae.fit(x, batch_size=100 * strategy.num_replicas_in_sync, epochs=10,
            callbacks=[distribute.BackupAndRestore("/shared/backup")])
    distribute.save_model(vae, "vae.keras")               # every worker calls it; the chief writes

Batch sizes. Under a strategy, the `batch_size` given to `fit` (or the batch of a
`tf.data.Dataset`) is the *global* batch: every step splits it into
`num_replicas_in_sync` per-replica batches, one per device (GPU, or logical CPU device) and
worker. Keep the per-replica batch fixed and scale the global batch with the replica count.
Train with `fit`: under a strategy `train_on_batch` gives every replica the whole batch.

Why the loss is averaged correctly. The VAE adds mean(reconstruction) and beta * mean(kl)
over its own per-replica batch with `add_loss`. Keras 3's TensorFlow trainer multiplies every
`add_loss` term by 1/R (R = `num_replicas_in_sync`; `Trainer._aggregate_additional_loss` ->
`scale_loss_for_distribution`), and the optimizer *sums* gradients across replicas
(all-reduce). With a global batch of B examples split into R equal shards of B/R:

    sum_r (1/R) * (R/B) * sum_{i in shard r} l_i = (1/B) * sum_i l_i

so the summed per-replica losses, and by linearity their summed gradients, are exactly the
global-batch mean a single device computes. Reported metrics (loss, reconstruction, kl,
neg_elbo) are per-example means over the global batch: the loss tracker multiplies the
scaled loss back by R and the `Mean` metrics sum totals and counts across replicas. The
identity needs equal shards: a final partial batch that does not split evenly (e.g. 97
examples on 2 replicas: 49 + 48) gives the mean of the two shard means, which weights its
examples very slightly unequally. tests/test_distributed.py checks one mirrored SGD step
against a single-device step to 1e-5.

Only the TensorFlow backend runs `tf.distribute`. Under JAX use
`keras.distribution.set_distribution(keras.distribution.DataParallel())`; there the batch is
one sharded array and the loss is the global mean by construction.
"""

import functools
import json
import os
import shutil
import tempfile

import keras

from keras_vae.files import atomic_save_model

STRATEGIES = ("default", "mirrored", "multiworker")
MIXED_PRECISION_POLICIES = (None, "mixed_float16", "mixed_bfloat16")

_TF_CONFIG_EXAMPLE = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                      '"task": {"type": "worker", "index": 0}}\'')


def _tf():
    import tensorflow as tf
    return tf


def read_tf_config(environ=None):
    """Parses and checks the `TF_CONFIG` environment variable of a multi-worker job.

    `TF_CONFIG` is JSON with a "cluster" (task type -> list of "host:port", with at least one
    "worker" or "chief") and this process's "task" ({"type": ..., "index": ...}), the same
    cluster on every worker and a different task on each.

    Returns:
        The parsed dict.

    Raises:
        ValueError: naming what is missing or wrong, and what to set.
    """
    environ = os.environ if environ is None else environ
    raw = environ.get("TF_CONFIG", "")
    if not raw.strip():
        raise ValueError(
            "The 'multiworker' strategy needs the TF_CONFIG environment variable, which tells "
            "each worker process the cluster and its own place in it. Set it on every worker "
            f"before starting Python, e.g. {_TF_CONFIG_EXAMPLE} (index 1 on the second worker).")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON ({err}); set it like "
                         f"{_TF_CONFIG_EXAMPLE}.") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not any(
            isinstance(cluster.get(k), list) and cluster.get(k) for k in ("worker", "chief")):
        raise ValueError('TF_CONFIG has no "cluster" with a non-empty "worker" (or "chief") list '
                         f'of "host:port" addresses; set it like {_TF_CONFIG_EXAMPLE}.')
    for task_type, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(
                isinstance(a, str) and a.rpartition(":")[2].isdigit() for a in addresses):
            raise ValueError(f'TF_CONFIG cluster[{task_type!r}] must be a list of "host:port" '
                             f"strings, got {addresses!r}.")
    task = config.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError('TF_CONFIG has no "task" saying which member of the cluster this process '
                         'is: add "task": {"type": "worker", "index": i}, with i different on '
                         "each worker.")
    task_type, index = task["type"], task["index"]
    if task_type not in cluster or isinstance(index, bool) or not isinstance(index, int) or not (
            0 <= index < len(cluster[task_type])):
        raise ValueError(f"TF_CONFIG task {task!r} is not in the cluster {cluster!r}: the type "
                         "must be one of the cluster's keys and the index a position in its list.")
    return config


def get_strategy(name="default", devices=None):
    """Returns the `tf.distribute.Strategy` called `name`; build and compile the model inside
    its `scope()` and call `fit` as usual.

    Args:
        name: "default": one device, no distribution (`tf.distribute.get_strategy()`).
            "mirrored": synchronous data parallelism over the devices of this machine
            (`tf.distribute.MirroredStrategy`): every GPU, or the CPU when there is none.
            "multiworker": synchronous data parallelism over several machines, or processes
            (`tf.distribute.MultiWorkerMirroredStrategy`), configured by the `TF_CONFIG`
            environment variable (see `read_tf_config`). Create it at the start of the
            program, before any other TensorFlow op runs, and run the same script on every
            worker.
        devices: "mirrored" only: the devices to mirror over, e.g. ["/gpu:0", "/gpu:1"] or
            logical CPU devices ["/cpu:0", "/cpu:1"]; None for all GPUs.

    The `batch_size` given to `fit` under a strategy is the global batch, split evenly across
    `strategy.num_replicas_in_sync` replicas; see the module docstring and
    `scaled_learning_rate`.

    Raises:
        ValueError: for an unknown name, "multiworker" without a valid TF_CONFIG, or a
            non-default strategy on a backend other than TensorFlow.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}: expected one of {STRATEGIES} ('default' for "
                         "one device, 'mirrored' for all GPUs of this machine, 'multiworker' for "
                         "several machines configured by TF_CONFIG).")
    if devices is not None and name != "mirrored":
        raise ValueError(f"devices= applies to the 'mirrored' strategy only, not {name!r}.")
    if name != "default" and keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"The {name!r} strategy is tf.distribute, which only drives the TensorFlow backend, "
            f"but KERAS_BACKEND is {keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow, or "
            "under JAX use keras.distribution.set_distribution(keras.distribution.DataParallel()).")
    tf = _tf()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    read_tf_config()
    return _multi_worker_strategy_class()()


@functools.lru_cache(maxsize=None)
def _multi_worker_strategy_class():
    tf = _tf()

    class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        """`tf.distribute.MultiWorkerMirroredStrategy` that also accepts Keras 3's reduction of
        scalar logs.

        Keras 3's TensorFlow trainer reduces every value a train/test step returns with
        `strategy.reduce("MEAN", value, axis=0)` under multi-worker training, which fails on the
        scalar metrics every model returns ("Invalid reduction dimension 0 for input with 0
        dimensions", tensorflow/tensorflow#72388), so `fit` and `evaluate` cannot run. A rank-0
        value has no axis 0: averaging it over the replicas (axis=None) is the reduction meant.
        """

        def reduce(self, reduce_op, value, axis=None):
            if axis is not None:
                first = value
                if isinstance(value, tf.distribute.DistributedValues):
                    first = value.values[0]
                if getattr(getattr(first, "shape", None), "rank", None) == 0:
                    axis = None
            return super().reduce(reduce_op, value, axis)

    return MultiWorkerMirroredStrategy


def set_mixed_precision(name):
    """Sets Keras' global dtype policy; call it before building the model.

    Args:
        name: None (or "float32") for full precision; "mixed_float16" (GPUs with tensor cores:
            the networks compute in float16, weights stay float32, and `compile` wraps the
            optimizer in a `LossScaleOptimizer` against gradient underflow); "mixed_bfloat16"
            (TPUs and recent GPUs; float32's exponent range, so no loss scaling). The VAE keeps
            sampling, the KL and the likelihood in float32 under either policy.

    Returns:
        The `keras.DTypePolicy` now in effect.

    Raises:
        ValueError: for any other name.
    """
    if name not in MIXED_PRECISION_POLICIES + ("float32",):
        raise ValueError(f"Unknown mixed-precision policy {name!r}: expected None (float32), "
                         "'mixed_float16' (GPUs) or 'mixed_bfloat16' (TPUs, recent GPUs).")
    keras.mixed_precision.set_dtype_policy(name or "float32")
    return keras.mixed_precision.dtype_policy()


def scaled_learning_rate(base_lr, global_batch, reference_batch=100):
    """The linear scaling rule (Goyal et al. 2017): `base_lr * global_batch / reference_batch`.

    A learning rate tuned for `reference_batch` examples per step (100 is Kingma & Welling's
    minibatch) moves the weights about as far per epoch with a `global_batch` k times larger
    when it is multiplied by k: each step averages k times more examples, and there are k
    times fewer steps. `global_batch` is the batch of one optimizer step over *all* replicas,
    `per_replica_batch * strategy.num_replicas_in_sync`, which is the `batch_size` given to
    `fit` under a strategy. Keep the per-replica batch fixed when adding devices, and scale
    the learning rate with the global batch. The rule is exact for plain SGD at small step
    sizes; for very large batches add a warm-up, and for Adam it is a starting point (Adam's
    steps do not grow with the gradient's scale).

    Raises:
        ValueError: unless all three are positive numbers.
    """
    for what, value in (("base_lr", base_lr), ("global_batch", global_batch),
                        ("reference_batch", reference_batch)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{what} must be a positive number, got {value!r}.")
    return float(base_lr) * float(global_batch) / float(reference_batch)


def global_batch_size(per_replica_batch, strategy=None):
    """`per_replica_batch * strategy.num_replicas_in_sync`: the `batch_size` to give `fit`.

    Args:
        per_replica_batch: examples each device processes per step.
        strategy: a `tf.distribute.Strategy`; None for the one in scope.
    """
    if isinstance(per_replica_batch, bool) or not isinstance(per_replica_batch, int) or (
            per_replica_batch < 1):
        raise ValueError(f"per_replica_batch must be an integer >= 1, got {per_replica_batch!r}.")
    strategy = strategy or _tf().distribute.get_strategy()
    return per_replica_batch * strategy.num_replicas_in_sync


def task_of(strategy=None):
    """(task_type, task_id, has_chief) of this process, (None, None, False) when not
    multi-worker."""
    strategy = strategy or _tf().distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return None, None, False
    return resolver.task_type, resolver.task_id, "chief" in resolver.cluster_spec().as_dict()


def is_chief(strategy=None):
    """True on the process that writes files: the "chief" task, worker 0 of a cluster without
    a chief, and any process that is not part of a multi-worker cluster.

    Args:
        strategy: a `tf.distribute.Strategy`; None for the one in scope.
    """
    task_type, task_id, has_chief = task_of(strategy)
    if task_type is None:
        return True
    return task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief)


def _worker_temp_dir(strategy=None):
    task_type, task_id, _ = task_of(strategy)
    return tempfile.mkdtemp(prefix=f"keras_vae_{task_type}{task_id}_")


def save_model(model, path, strategy=None):
    """Saves `model` once per cluster, as the Keras multi-worker guide prescribes.

    Every worker must call this (saving may read distributed variables); the chief writes
    `path`, the other workers write to a temporary directory that is removed at once. Outside
    multi-worker training it is `model.save(path)`.

    Args:
        model: the model to save.
        path: where the chief writes it (a `.keras` file).
        strategy: a `tf.distribute.Strategy`; None for the model's own (the one it was built
            under).

    Returns:
        `path` on the chief, None on the other workers.
    """
    strategy = strategy or getattr(model, "distribute_strategy", None)
    if is_chief(strategy):
        atomic_save_model(model, path)  # a temporary name, then os.replace
        return path
    temp = _worker_temp_dir(strategy)
    try:
        model.save(os.path.join(temp, os.path.basename(str(path))))
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return None


class BackupAndRestore(keras.callbacks.Callback):
    """`keras.callbacks.BackupAndRestore` made safe for several workers.

    Keras 3's callback writes to `backup_dir` from every process, so workers sharing a
    directory overwrite each other's files. Here only the chief writes `backup_dir` (the other
    workers write a private temporary directory, deleted at the end), and *every* worker
    restores from the chief's backup, so all of them resume at the same epoch with the same
    weights after a failure. Restart all workers after one dies; `backup_dir` must be on
    storage every worker can read (the same path on one machine, a shared filesystem or
    bucket across machines). Arguments as `keras.callbacks.BackupAndRestore`;
    `double_checkpoint` defaults to True here, so a chief killed while writing falls back to
    the previous backup.
    """

    def __init__(self, backup_dir, save_freq="epoch", double_checkpoint=True,
                 delete_checkpoint=True):
        super().__init__()
        self.backup_dir = backup_dir
        self._options = dict(save_freq=save_freq, double_checkpoint=double_checkpoint,
                             delete_checkpoint=delete_checkpoint)
        self._restore = keras.callbacks.BackupAndRestore(backup_dir, **self._options)
        self._backup = None
        self._temp = None

    def set_model(self, model):
        super().set_model(model)
        self._restore.set_model(model)
        if self._backup is not None:
            self._backup.set_model(model)

    def on_train_begin(self, logs=None):
        strategy = getattr(self.model, "distribute_strategy", None)
        if is_chief(strategy):
            self._backup = self._restore
        else:
            self._temp = _worker_temp_dir(strategy)
            self._backup = keras.callbacks.BackupAndRestore(self._temp, **self._options)
            self._backup.set_model(self.model)
        self._restore.on_train_begin(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._backup.on_epoch_end(epoch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self._backup.on_train_batch_end(batch, logs)

    def on_train_end(self, logs=None):
        self._backup.on_train_end(logs)
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
