"""Distributed training against single-device ground truth.

- Mirrored: 2 logical CPU devices in one process; one SGD step and a short run compared with the
  same step and run on one device.
- Multi-worker: 2 worker processes on 127.0.0.1 configured by TF_CONFIG; one of them dies after
  epoch 2, both are restarted, training resumes from the backup and saves one model.
- JAX (marked slow): keras.distribution.DataParallel over 2 forced host devices, one SGD step.

Logical devices must be configured before TensorFlow initializes, so each scenario runs in a fresh
Python subprocess, bounded by a timeout, and reports JSON back.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest

import keras_vae as kv
from keras_vae import distribute

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 240  # seconds for any one subprocess; the file takes ~2.5 min on 2 busy cores


def subprocess_env(**extra):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3",
               KERAS_BACKEND="tensorflow", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def run_script(script, *args, env=None):
    proc = subprocess.run([sys.executable, "-c", script, *map(str, args)],
                          env=env or subprocess_env(), capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def digits_file(tmp_path_factory, binary_digits):
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, train=binary_digits[0], test=binary_digits[1])
    return path


def max_abs_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in zip(a, b))


# ----------------------------------------------------------------- API and errors, in process
def test_unknown_strategy_and_devices_are_rejected():
    with pytest.raises(ValueError, match="Unknown strategy 'horovod'.*mirrored"):
        distribute.get_strategy("horovod")
    with pytest.raises(ValueError, match="devices= applies to the 'mirrored' strategy only"):
        distribute.get_strategy("default", devices=["/cpu:0"])
    assert distribute.get_strategy("default").num_replicas_in_sync == 1


@pytest.mark.parametrize("tf_config, message", [
    (None, "needs the TF_CONFIG environment variable"),
    ("{not json", "not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', 'no "cluster"'),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}',
     '"host:port"'),
    ('{"cluster": {"worker": ["localhost:1"]}}', 'no "task"'),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 1}}',
     "not in the cluster"),
])
def test_multiworker_without_valid_tf_config_says_what_to_set(monkeypatch, tf_config, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=message) as err:
        distribute.get_strategy("multiworker")
    assert "TF_CONFIG" in str(err.value)


def test_read_tf_config_accepts_a_valid_cluster():
    config = {"cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"]},
              "task": {"type": "worker", "index": 1}}
    assert distribute.read_tf_config({"TF_CONFIG": json.dumps(config)}) == config


def test_set_mixed_precision_sets_the_policy_and_rejects_others():
    try:
        for name, compute in [("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16"),
                              (None, "float32"), ("float32", "float32")]:
            policy = distribute.set_mixed_precision(name)
            layer = keras.layers.Dense(2)
            layer.build((None, 3))
            assert (policy.compute_dtype, layer.compute_dtype, layer.kernel.dtype) == (
                compute, compute, "float32")
        with pytest.raises(ValueError, match="Unknown mixed-precision policy 'float16'"):
            distribute.set_mixed_precision("float16")
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def test_linear_scaling_rule():
    assert distribute.scaled_learning_rate(1e-3, 100) == pytest.approx(1e-3)
    assert distribute.scaled_learning_rate(1e-3, 800) == pytest.approx(8e-3)
    assert distribute.scaled_learning_rate(0.1, 64, reference_batch=256) == pytest.approx(0.025)
    for bad in (0, -100, True, "100", None):
        with pytest.raises(ValueError, match="global_batch must be a positive number"):
            distribute.scaled_learning_rate(1e-3, bad)
    assert distribute.global_batch_size(50) == 50  # default strategy: one replica
    fake = SimpleNamespace(num_replicas_in_sync=4)
    assert distribute.global_batch_size(50, fake) == 200
    with pytest.raises(ValueError, match="per_replica_batch"):
        distribute.global_batch_size(0)


@pytest.mark.parametrize("cluster, task_type, task_id, chief", [
    ({"worker": ["a:1", "b:1"]}, "worker", 0, True),
    ({"worker": ["a:1", "b:1"]}, "worker", 1, False),
    ({"chief": ["c:1"], "worker": ["a:1"]}, "chief", 0, True),
    ({"chief": ["c:1"], "worker": ["a:1"]}, "worker", 0, False),
])
def test_is_chief_follows_the_cluster_spec(cluster, task_type, task_id, chief):
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)
    assert distribute.is_chief(SimpleNamespace(cluster_resolver=resolver)) is chief
    assert distribute.is_chief() is True  # not multi-worker: this process writes


def test_backup_and_restore_resumes_a_single_process_run(tmp_path, binary_digits):
    """On one process the wrapper behaves as keras.callbacks.BackupAndRestore: an interrupted
    fit resumes at the epoch after the last backup, with that epoch's weights."""
    x = binary_digits[0][:200]

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("interrupted")

    class Record(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs, self.weights = [], None

        def on_train_begin(self, logs=None):
            self.weights = [w.copy() for w in self.model.get_weights()]

        def on_epoch_begin(self, epoch, logs=None):
            self.epochs.append(epoch)

    keras.utils.set_random_seed(0)
    vae = kv.VAE.kingma_welling(64, 2, hidden_units=8, seed=0)
    vae.compile(optimizer="adam")
    backup = tmp_path / "backup"
    with pytest.raises(RuntimeError, match="interrupted"):
        vae.fit(x, epochs=4, batch_size=100, verbose=0,
                callbacks=[distribute.BackupAndRestore(str(backup)), Interrupt()])
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 2
    after_epoch_2 = [w.copy() for w in vae.get_weights()]
    vae.fit(x[:100], epochs=1, batch_size=100, verbose=0)  # move the weights away
    assert max_abs_diff(vae.get_weights(), after_epoch_2) > 1e-4

    record = Record()
    history = vae.fit(x, epochs=4, batch_size=100, verbose=0,
                      callbacks=[distribute.BackupAndRestore(str(backup)), record])
    assert record.epochs == [2, 3] and len(history.history["loss"]) == 2
    assert max_abs_diff(record.weights, after_epoch_2) == 0.0
    assert not backup.exists()  # deleted once training finished


# ----------------------------------------------------------------- mirrored, 2 logical CPUs
MIRRORED_SCRIPT = r"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
import keras_vae as kv
from keras_vae import distribute

data, probe = np.load(sys.argv[1]), sys.argv[2]
x_train, x_test = data["train"][:1000], data["test"]
strategy = distribute.get_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
out = {"replicas": strategy.num_replicas_in_sync}


class Probe(kv.VAE):
    # While Probe.path is set, writes each replica's share of a training batch to that file.
    path = None

    def call(self, x, training=False):
        ctx = tf.distribute.get_replica_context()
        if self.path and training and ctx is not None and ctx.num_replicas_in_sync > 1:
            tf.print(ctx.replica_id_in_sync_group, tf.shape(x)[0],
                     output_stream="file://" + self.path)
        return super().call(x, training=training)


def trained(weights, lr, x, epochs, batch_size, scope=None):
    with (scope or tf.distribute.get_strategy()).scope():
        vae = Probe.kingma_welling(64, 2, hidden_units=32, seed=1)
        vae.set_weights(weights)
        vae.compile(optimizer=keras.optimizers.SGD(lr))
    history = vae.fit(x, epochs=epochs, batch_size=batch_size, shuffle=False, verbose=0)
    return vae, history.history


keras.utils.set_random_seed(0)
init = kv.VAE.kingma_welling(64, 2, hidden_units=32)
weights = init.get_weights()

# 1. One SGD step on a batch of 64, sampling noise made negligible: z_log_var = -30, so
#    sigma * eps ~ 3e-7 * eps. Each replica gets 32 examples.
head = init.encoder.get_layer("z_log_var")
head.set_weights([head.get_weights()[0], np.full(2, -30.0, "float32")])
quiet = init.get_weights()
batch = x_train[:64]
single = trained(quiet, 0.1, batch, 1, 64)[0].get_weights()
Probe.path = probe
mirrored = trained(quiet, 0.1, batch, 1, 64, strategy)[0]
Probe.path = None
out["step"] = {
    "mirrored_vs_single": max(float(np.max(np.abs(a - b)))
                              for a, b in zip(mirrored.get_weights(), single)),
    "update": max(float(np.max(np.abs(a - b))) for a, b in zip(single, quiet)),
}

# 2. Short runs with the real noise: 5 epochs of SGD over 1000 digits, global batch 100.
def test_neg_elbo(vae):
    # common random numbers: the same evaluator seed for every model, 5 passes averaged
    evaluator = kv.VAE.kingma_welling(64, 2, hidden_units=32, seed=123)
    evaluator.set_weights(vae.get_weights())
    evaluator.compile()
    return float(np.mean([evaluator.evaluate(x_test, batch_size=297, verbose=0,
                                             return_dict=True)["neg_elbo"] for _ in range(5)]))

out["runs"] = {}
for name, lr, scope in [("mirrored", 0.01, strategy), ("single", 0.01, None),
                        ("summed", 0.02, None), ("double_averaged", 0.005, None)]:
    vae, history = trained(weights, lr, x_train, 5, 100, scope)
    out["runs"][name] = {"history": history["neg_elbo"], "test": test_neg_elbo(vae)}

# 3. The replicas draw different eps from the same Sampling layer.
with strategy.scope():
    sampling = kv.Sampling(seed=3)
draws = strategy.run(tf.function(lambda: sampling([tf.zeros((2000, 2)), tf.zeros((2000, 2))])))
a, b = (np.asarray(d).ravel() for d in strategy.experimental_local_results(draws))
out["eps"] = {"corr": float(np.corrcoef(a, b)[0, 1]), "std": [float(a.std()), float(b.std())]}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def mirrored(digits_file, tmp_path_factory):
    probe = tmp_path_factory.mktemp("mirrored") / "probe.txt"
    out = run_script(MIRRORED_SCRIPT, digits_file, probe)
    out["probe"] = probe.read_text().split("\n")
    return out


@pytest.mark.large
def test_mirrored_sgd_step_equals_single_device_step(mirrored):
    """Ground truth: the same SGD step on one device. Tolerance 1e-5 on the weights: float32
    round-off of summing two half-batch gradients instead of one (measured: ~1e-7); the
    remaining sampling noise moves z by ~3e-7. A loss summed over the 2 replicas instead of
    averaged doubles the gradient, and an SGD step is linear in it, so the weights would land
    one whole `update` (measured 0.117) away from the single-device step."""
    assert mirrored["replicas"] == 2
    # the global batch of 64 was split 32 + 32 (train_on_batch would give each replica all 64)
    assert sorted(line for line in mirrored["probe"] if line) == ["0 32", "1 32"]
    step = mirrored["step"]
    assert step["mirrored_vs_single"] < 1e-5
    assert step["update"] > 1e-2  # so a summed (or halved) loss fails the 1e-5 bound


@pytest.mark.large
def test_mirrored_run_neg_elbo_equals_single_device_within_noise(mirrored):
    """5 epochs of SGD (lr 0.01) from the same weights, on 2 replicas and on one device; test
    -ELBO by one evaluator with common random numbers. The runs differ only in their sampling
    noise. Measured over 6 sampling seeds on one device: final test -ELBO 31.41..31.49 nats
    (std 0.03), so 0.25 nats is ~8 standard deviations. A loss summed over replicas (= lr 0.02)
    ends at ~28.0 nats and one divided by the replica count twice (= lr 0.005) at ~37, both far
    outside it. Reported per-epoch training -ELBO must agree within 1% (a sum over replicas
    would double it)."""
    runs = mirrored["runs"]
    single, distributed = runs["single"]["test"], runs["mirrored"]["test"]
    assert abs(distributed - single) < 0.25, runs
    for wrong in ("summed", "double_averaged"):
        assert abs(runs[wrong]["test"] - single) > 1.0, runs  # the check has power
    np.testing.assert_allclose(runs["mirrored"]["history"], runs["single"]["history"], rtol=0.01)
    assert runs["mirrored"]["history"][-1] < runs["mirrored"]["history"][0] - 5


@pytest.mark.large
def test_replicas_draw_independent_noise(mirrored):
    """Each replica folds its id into the sampling seed: without it both replicas draw the same
    eps (correlation 1). 4000 pairs: |corr| < 0.1 is > 6 standard errors (0.016)."""
    assert abs(mirrored["eps"]["corr"]) < 0.1
    np.testing.assert_allclose(mirrored["eps"]["std"], 1.0, atol=0.05)


# ----------------------------------------------------------------- multi-worker, 2 processes
WORKER_SCRIPT = r"""
import json, os, sys
from keras_vae import distribute
strategy = distribute.get_strategy("multiworker")  # first: before any other TensorFlow work

import keras, numpy as np
import keras_vae as kv

data_path, model_path, backup_dir, log_path = sys.argv[1:5]
die_after_epoch, epochs = int(sys.argv[5]), int(sys.argv[6])
data = np.load(data_path)
x_train, x_test = data["train"][:600], data["test"]


def log(**event):
    with open(log_path, "a") as f:
        f.write(json.dumps(event) + "\n")
        f.flush()
        os.fsync(f.fileno())


keras.utils.set_random_seed(0)
with strategy.scope():
    vae = kv.VAE.kingma_welling(64, 2, hidden_units=32, seed=1)
    vae.compile(optimizer=keras.optimizers.Adam(1e-2))


def checksum():
    return float(sum(np.abs(w).astype("float64").sum() for w in vae.get_weights()))


class Record(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):  # after BackupAndRestore restored its state
        log(event="train_begin", checksum=checksum())

    def on_epoch_begin(self, epoch, logs=None):
        log(event="epoch_begin", epoch=epoch)

    def on_epoch_end(self, epoch, logs=None):  # after BackupAndRestore wrote its backup
        log(event="epoch_end", epoch=epoch, checksum=checksum(), neg_elbo=logs["neg_elbo"])
        if epoch == die_after_epoch:
            os._exit(17)


untrained = vae.evaluate(x_test, batch_size=100, verbose=0, return_dict=True)["neg_elbo"]
history = vae.fit(x_train, epochs=epochs, batch_size=100, verbose=0,
                  callbacks=[distribute.BackupAndRestore(backup_dir), Record()])
trained = vae.evaluate(x_test, batch_size=100, verbose=0, return_dict=True)["neg_elbo"]
saved = distribute.save_model(vae, model_path)
# noise-free -ELBO of the trained weights, to compare with the saved model's
head = vae.encoder.get_layer("z_log_var")
head.set_weights([head.get_weights()[0], np.full(2, -30.0, "float32")])
quiet = vae.evaluate(x_test, batch_size=100, verbose=0, return_dict=True)["neg_elbo"]
log(event="done", chief=distribute.is_chief(strategy), replicas=strategy.num_replicas_in_sync,
    history=history.history["neg_elbo"], untrained=untrained, trained=trained, quiet=quiet,
    saved=saved)
"""

EPOCHS = 4


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def read_log(path):
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def start_cluster(tmp, attempt, data, die_after_epoch):
    """Starts 2 workers on 127.0.0.1; worker 1 exits after `die_after_epoch` (-1: never). Their
    output goes to files (a pipe nobody reads could fill up and block a worker)."""
    ports = free_ports(2)
    procs = []
    for index in range(2):
        config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                  "task": {"type": "worker", "index": index}}
        env = subprocess_env(TF_CONFIG=json.dumps(config), TMPDIR=str(tmp / "tmp"))
        args = [data, tmp / "out" / "vae.keras", tmp / "backup",
                tmp / f"attempt{attempt}_worker{index}.jsonl",
                die_after_epoch if index == 1 else -1, EPOCHS]
        with open(tmp / f"attempt{attempt}_worker{index}.out", "w") as output:
            proc = subprocess.Popen([sys.executable, "-c", WORKER_SCRIPT, *map(str, args)],
                                    env=env, stdout=output, stderr=subprocess.STDOUT)
        proc.output_path = tmp / f"attempt{attempt}_worker{index}.out"
        procs.append(proc)
    return procs


def finish(procs, timeout):
    """Waits for every process; kills them all if one is not done in time. Returns their
    outputs' last 3000 characters."""
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            proc.wait()
    return [p.output_path.read_text()[-3000:] for p in procs]


@pytest.fixture(scope="module")
def multiworker(digits_file, tmp_path_factory):
    """Attempt 1: worker 1 dies (os._exit) at the end of epoch 2, after the backup; worker 0
    would wait for it forever in the next all-reduce, so the harness kills it once its backup
    of epoch 2 is on disk. Attempt 2: both restart with the same backup_dir and finish."""
    tmp = tmp_path_factory.mktemp("multiworker")
    (tmp / "out").mkdir()
    (tmp / "tmp").mkdir()
    chief, worker = start_cluster(tmp, 1, digits_file, die_after_epoch=1)
    deadline = time.monotonic() + TIMEOUT
    while worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    metadata = tmp / "backup" / "training_metadata.json"
    chief_log = tmp / "attempt1_worker0.jsonl"
    deadline = time.monotonic() + 60
    # wait for the chief's backup of epoch 2 AND its own log of that epoch's end (its Record
    # callback runs just after the backup is written: killing it in between loses the line)
    while chief.poll() is None and time.monotonic() < deadline:
        try:
            if json.loads(metadata.read_text())["epoch"] == 2 and \
                    len(events(read_log(chief_log), "epoch_end")) >= 2:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    for proc in (chief, worker):
        if proc.poll() is None:
            proc.kill()
    first = finish([chief, worker], timeout=30)
    first_codes = [chief.returncode, worker.returncode]
    attempt1 = [read_log(tmp / f"attempt1_worker{i}.jsonl") for i in range(2)]

    procs = start_cluster(tmp, 2, digits_file, die_after_epoch=-1)
    second = finish(procs, timeout=TIMEOUT)
    assert [p.returncode for p in procs] == [0, 0], "\n".join(second)
    attempt2 = [read_log(tmp / f"attempt2_worker{i}.jsonl") for i in range(2)]
    return SimpleNamespace(tmp=tmp, first_codes=first_codes, attempt1=attempt1,
                           attempt2=attempt2, first_output=first)


def events(log, name):
    return [e for e in log if e["event"] == name]


@pytest.mark.large
def test_multiworker_training_saves_one_model_that_loads(multiworker, binary_digits):
    done = [events(log, "done")[0] for log in multiworker.attempt2]
    assert [d["chief"] for d in done] == [True, False]
    assert all(d["replicas"] == 2 for d in done)
    # exactly one model: the chief's; the other worker's copy went to a temp dir, now deleted
    assert done[0]["saved"] == str(multiworker.tmp / "out" / "vae.keras") and not done[1]["saved"]
    assert sorted(p.name for p in (multiworker.tmp / "out").iterdir()) == ["vae.keras"]
    assert not list((multiworker.tmp / "tmp").rglob("*.keras"))
    # metrics are aggregated over both workers' shards, so both report the same numbers
    assert done[0]["history"] == done[1]["history"] and done[0]["trained"] == done[1]["trained"]

    x_test = binary_digits[1]
    loaded = keras.models.load_model(multiworker.tmp / "out" / "vae.keras")
    neg_elbo = loaded.evaluate(x_test, batch_size=100, verbose=0, return_dict=True)["neg_elbo"]
    assert np.isfinite(neg_elbo)
    # untrained ~45 nats (64 pixels, mostly ln 2 each), trained ~27: a margin of 5 nats
    assert neg_elbo < done[0]["untrained"] - 5
    # the loaded weights are the trained ones: with the noise removed, the single-process
    # -ELBO equals the one the two workers computed together (float32 round-off)
    head = loaded.encoder.get_layer("z_log_var")
    head.set_weights([head.get_weights()[0], np.full(2, -30.0, "float32")])
    quiet = loaded.evaluate(x_test, batch_size=100, verbose=0, return_dict=True)["neg_elbo"]
    assert quiet == pytest.approx(done[0]["quiet"], abs=1e-3)


@pytest.mark.large
def test_killed_worker_resumes_from_backup(multiworker):
    chief1, worker1 = multiworker.attempt1
    # attempt 1: worker 1 died at the end of epoch 2 (index 1); the chief was killed or failed
    assert multiworker.first_codes[1] == 17, multiworker.first_output[1]
    assert multiworker.first_codes[0] != 0
    assert [e["epoch"] for e in events(worker1, "epoch_end")] == [0, 1]
    assert not events(chief1, "done")
    # worker 1 backed up to its own temp dir (left behind by os._exit), not the chief's dir
    assert list((multiworker.tmp / "tmp").glob("keras_vae_worker1_*/latest.weights.h5"))
    backed_up = events(chief1, "epoch_end")[1]
    assert backed_up["epoch"] == 1

    for log in multiworker.attempt2:
        # resumed at epoch index 2 (not 0) and ran the 2 remaining epochs
        assert [e["epoch"] for e in events(log, "epoch_begin")] == [2, 3]
        assert len(events(log, "done")[0]["history"]) == EPOCHS - 2
        # with the weights of the end of epoch 2, restored from the chief's backup
        assert events(log, "train_begin")[0]["checksum"] == pytest.approx(
            backed_up["checksum"], rel=1e-12)
    first_loss = events(chief1, "epoch_end")[0]["neg_elbo"]
    assert events(multiworker.attempt2[0], "done")[0]["history"][-1] < first_loss
    assert not (multiworker.tmp / "backup").exists()  # removed after a finished run


# ----------------------------------------------------------------- JAX data parallelism
JAX_SCRIPT = r"""
import json, sys
import jax, keras, numpy as np
assert keras.backend.backend() == "jax" and len(jax.devices()) == 2
import keras_vae as kv
from keras_vae import distribute

x = np.load(sys.argv[1])["train"][:64]
try:
    distribute.get_strategy("mirrored")
    refused = False
except ValueError as err:
    refused = "DataParallel" in str(err)

keras.utils.set_random_seed(0)
init = kv.VAE.kingma_welling(64, 2, hidden_units=32)
head = init.encoder.get_layer("z_log_var")
head.set_weights([head.get_weights()[0], np.full(2, -30.0, "float32")])
quiet = init.get_weights()
shardings = []


class Probe(kv.VAE):
    # records how the training batch is laid out over the devices
    def call(self, x, training=False):
        if training:
            jax.debug.inspect_array_sharding(x, callback=lambda s: shardings.append(str(s)))
        return super().call(x, training=training)


def step():
    vae = Probe.kingma_welling(64, 2, hidden_units=32, seed=1)
    vae.set_weights(quiet)
    vae.compile(optimizer=keras.optimizers.SGD(0.1))
    vae.fit(x, epochs=1, batch_size=64, shuffle=False, verbose=0)
    return vae.get_weights()


single = step()
keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
parallel = step()
diff = lambda a, b: max(float(np.max(np.abs(u - v))) for u, v in zip(a, b))
print(json.dumps({"refused": refused, "parallel_vs_single": diff(parallel, single),
                  "update": diff(single, quiet), "shardings": shardings}))
"""


@pytest.mark.slow  # ~30 s more (JAX and TensorFlow start in one more process); pytest -m slow
@pytest.mark.large
def test_jax_data_parallel_step_equals_single_device_step(digits_file):
    """Under JAX, keras.distribution.DataParallel shards the batch over 2 host devices and the
    loss is the mean over the global batch: one SGD step equals the single-device step (1e-5,
    as in the mirrored test); a summed loss would double the step and land `update` (~0.1)
    away. get_strategy refuses tf.distribute names there and points to DataParallel."""
    env = subprocess_env(KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
                         XLA_FLAGS="--xla_force_host_platform_device_count=2")
    out = run_script(JAX_SCRIPT, digits_file, env=env)
    assert out["refused"]
    # the first step ran on one device, the second with the batch split over the 2 devices
    assert len(out["shardings"]) == 2 and "'batch': 2" in out["shardings"][1]
    assert "P('batch',)" in out["shardings"][1] and "'batch'" not in out["shardings"][0]
    assert out["parallel_vs_single"] < 1e-5
    assert out["update"] > 1e-2
