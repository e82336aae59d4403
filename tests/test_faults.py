"""Fault injection: what a kill, a second process, a damaged file or a hostile input does to a
run, on real folders and real processes.

A child process is stopped with SIGKILL at an exact point (while model.keras is written, right
after a backup epoch is saved) by a hook the test installs in it before calling the CLI, so
each test is deterministic rather than a timing race.
"""

import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from keras_vae import NonFiniteLoss, VAE, cli, datasets, evaluation, files, training
from keras_vae.training import runs

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["train", "--dataset", "digits", "--latent-dim", "2", "--hidden-units", "16",
         "--batch-size", "500", "--seed", "1"]

# The child: installs one fault hook, then runs `keras-vae ARGS...` in-process.
DRIVER = textwrap.dedent(r'''
    import os, signal, sys, time

    hook = sys.argv[1]

    def die():
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    if hook == "kill-in-model-save":  # the .keras archive is half written when the kill comes
        import zipfile
        original_close = zipfile.ZipFile.close

        def close(self):
            name = str(getattr(self, "filename", "") or "")
            if name.endswith(".keras") and self.mode == "w" and self.fp is not None:
                self.fp.flush()
                die()
            original_close(self)
        zipfile.ZipFile.close = close
    elif hook.startswith("kill-after-backup-"):  # right after epoch K's backup is written
        import keras
        after = int(hook.rsplit("-", 1)[1])
        original_save = keras.callbacks.BackupAndRestore._save_model

        def save(self):
            original_save(self)
            if self._current_epoch == after:
                die()
        keras.callbacks.BackupAndRestore._save_model = save
    elif hook == "hold-in-fit":  # holds the run (and its lock) until killed
        from keras_vae import model

        def fit(self, *args, **kwargs):
            open(os.environ["FAULT_READY"], "w").close()
            time.sleep(600)
        model.VAE.fit = fit

    from keras_vae.cli import main
    sys.exit(main(sys.argv[2:]))
''')


def child(tmp_path, hook, *args, wait=True, **env):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    environ = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **env)
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), environ.get("PYTHONPATH"))
                                            if p)
    command = [sys.executable, str(driver), hook, *map(str, args)]
    if not wait:
        return subprocess.Popen(command, env=environ, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, env=environ, capture_output=True, text=True, timeout=600)


def history_epochs(run_dir):
    return training.read_history(str(run_dir)).get("epoch", [])


# ----------------------------------------------------------------------------- item 3
@pytest.mark.large
def test_kill_during_the_model_save_then_rerun_and_evaluate(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = [*TRAIN, "--epochs", "1", "--run-dir", run_dir]
    killed = child(tmp_path, "kill-in-model-save", *args)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    # the cut archive never took the name model.keras; the backup of the last epoch is there
    assert not (run_dir / "model.keras").exists()
    assert any(files.is_temp_name(n) for n in os.listdir(run_dir))
    assert (run_dir / "backup").is_dir() and not (run_dir / "summary.json").exists()

    assert cli.main([str(a) for a in args]) == 0
    assert not any(files.is_temp_name(n) for n in os.listdir(run_dir))  # leftovers removed
    assert runs.model_file_problem(str(run_dir / "model.keras")) is None
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs_trained"] == 1 and history_epochs(run_dir) == [0]
    capsys.readouterr()
    assert cli.main(["evaluate", str(run_dir)]) == 0
    evaluated = json.loads((run_dir / "evaluation.json").read_text())
    assert evaluated["neg_elbo"] == pytest.approx(summary["test"]["neg_elbo"], rel=1e-5)

    # A model.keras cut by an older version (0 bytes) next to an intact best checkpoint:
    # evaluate says how to repair it, and the rerun rebuilds it from the checkpoint.
    (run_dir / "model.keras").write_bytes(b"")
    (run_dir / "summary.json").unlink()
    capsys.readouterr()
    assert cli.main(["evaluate", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "model.keras is damaged (0 bytes)" in err and "Rerun the same `keras-vae train`" in err
    assert len(err.strip().splitlines()) == 1
    assert cli.main([str(a) for a in args]) == 0
    assert "rebuilding it from checkpoints" in capsys.readouterr().out
    assert cli.main(["evaluate", str(run_dir)]) == 0
    again = json.loads((run_dir / "evaluation.json").read_text())
    assert again["neg_elbo"] == pytest.approx(evaluated["neg_elbo"], rel=1e-5)


def test_model_file_problem_names_cut_archives(tmp_path):
    import keras

    vae = VAE.kingma_welling(input_dim=4, latent_dim=2, hidden_units=3)
    path = tmp_path / "model.keras"
    files.atomic_save_model(vae, str(path))
    assert runs.model_file_problem(str(path)) is None
    whole = path.read_bytes()
    for cut in (0, 107, len(whole) // 2, len(whole) - 1):
        path.write_bytes(whole[:cut])
        assert runs.model_file_problem(str(path)) is not None, cut
    path.write_bytes(whole)
    assert keras.saving.load_model(str(path)).latent_dim == 2


def test_atomic_writes_leave_the_old_file_when_the_write_fails(tmp_path):
    path = tmp_path / "summary.json"
    files.atomic_write_json(str(path), {"a": 1})

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with files.atomic_path(str(path)) as tmp:
            Path(tmp).write_text('{"a": 2, "tor')
            raise Boom
    assert json.loads(path.read_text()) == {"a": 1} and os.listdir(tmp_path) == [path.name]


def test_history_survives_a_torn_row_and_a_second_header(tmp_path):
    (tmp_path / "history.csv").write_text(
        "epoch,loss\n0,3.5\n1,3.0\nepoch,loss\n1,2.9\n2,2.")  # interleaved writers, cut row
    assert training.read_history(str(tmp_path)) == {"epoch": [0, 1, 1, 2], "loss":
                                                    [3.5, 3.0, 2.9, 2.0]}
    runs.truncate_history(str(tmp_path), 2)
    assert (tmp_path / "history.csv").read_text() == "epoch,loss\n0,3.5\n1,2.9\n"


# ----------------------------------------------------------------------------- item 4
@pytest.mark.large
def test_a_second_train_on_the_same_run_dir_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = [*TRAIN, "--epochs", "1", "--run-dir", run_dir]
    ready = tmp_path / "ready"
    holder = child(tmp_path, "hold-in-fit", *args, wait=False, FAULT_READY=str(ready))
    try:
        deadline = time.time() + 300
        while not ready.exists() and holder.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert ready.exists(), holder.communicate()[1][-2000:]
        second = subprocess.run(
            [sys.executable, "-m", "keras_vae", *map(str, args)], capture_output=True,
            text=True, timeout=300,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                     PYTHONPATH=os.pathsep.join(p for p in (str(REPO),
                                                            os.environ.get("PYTHONPATH")) if p)))
        assert second.returncode == 2, second.stderr[-2000:]
        assert "Traceback" not in second.stderr
        lines = [ln for ln in second.stderr.splitlines() if ln.startswith("keras-vae")]
        assert len(lines) == 1 and lines[0].startswith("keras-vae train: error: ")
        assert f"in use by another keras-vae process (pid {holder.pid} on " in lines[0]
        assert json.loads((run_dir / ".keras-vae.lock").read_text())["pid"] == holder.pid
    finally:
        holder.kill()
        holder.communicate()
    # the holder died by SIGKILL: its lock is stale and does not block the next run
    assert (run_dir / ".keras-vae.lock").exists()
    assert cli.main([str(a) for a in args]) == 0
    assert history_epochs(run_dir) == [0] and not (run_dir / ".keras-vae.lock").exists()


def test_directory_lock_is_exclusive_reentrant_and_released(tmp_path):
    lock = files.DirectoryLock(str(tmp_path))
    with lock:
        with files.DirectoryLock(str(tmp_path)):  # the same process may nest it
            pass
        holder = json.loads((tmp_path / ".keras-vae.lock").read_text())
        assert holder["pid"] == os.getpid()
        # another process is refused, naming this one
        code = ("import sys; from keras_vae import files\n"
                "try:\n    files.DirectoryLock(sys.argv[1]).acquire()\n"
                "except files.LockedError as e:\n    print(e); sys.exit(3)\n")
        other = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                               text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
        assert other.returncode == 3 and f"pid {os.getpid()} on " in other.stdout
    assert not (tmp_path / ".keras-vae.lock").exists()
    files.DirectoryLock(str(tmp_path)).acquire().release()


# ----------------------------------------------------------------------------- item 5
@pytest.mark.large
def test_a_corrupt_backup_resumes_from_the_backup_before_it(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = [*TRAIN, "--epochs", "3", "--run-dir", run_dir]
    killed = child(tmp_path, "kill-after-backup-2", *args)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    metadata = run_dir / "backup" / "training_metadata.json"
    assert json.loads(metadata.read_text())["epoch"] == 2
    metadata.write_text('{"epo')  # torn, as a kill during Keras's own write leaves it
    capsys.readouterr()
    assert cli.main([str(a) for a in args]) == 0
    out = capsys.readouterr().out
    assert "resuming from the backup before it (epoch 1)" in out
    assert f"Resuming {run_dir} after epoch 1 of 3" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_from_epoch"] == 1 and summary["epochs_trained"] == 3
    assert history_epochs(run_dir) == [0, 1, 2]  # each epoch once, the restored one redone


def test_a_corrupt_backup_without_an_earlier_one_is_refused(tmp_path):
    backup = tmp_path / "backup"
    backup.mkdir()
    vae = VAE.kingma_welling(input_dim=4, latent_dim=2, hidden_units=3)
    vae.save_weights(str(backup / "latest.weights.h5"))
    (backup / "training_metadata.json").write_text('{"epoch": "three"}')
    with pytest.raises(runs.RunDirError, match=r"training_metadata.json is damaged .*Delete "):
        runs.backup_epoch(str(tmp_path))
    (backup / "training_metadata.json").write_text('{"epoch": 3, "batch": 0}')
    assert runs.backup_epoch(str(tmp_path)) == 3
    (backup / "latest.weights.h5").write_bytes(b"\x89HDF\r\n")  # cut weights: Keras can't load
    with pytest.raises(runs.RunDirError, match=r"latest.weights.h5 cannot be read"):
        runs.backup_epoch(str(tmp_path))


# ----------------------------------------------------------------------------- item 2
def test_overwrite_never_deletes_a_folder_keras_vae_did_not_make(tmp_path, capsys):
    web = tmp_path / "site"
    web.mkdir()
    (web / "config.json").write_text('{"name": "my-site", "port": 8080}')
    (web / "index.html").write_text("<h1>hi</h1>")
    assert cli.main([*TRAIN, "--epochs", "1", "--run-dir", str(web), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "is not a keras-vae run directory" in err
    assert "--overwrite never deletes such a directory" in err
    assert sorted(os.listdir(web)) == ["config.json", "index.html"]  # nothing added either

    config = training.make_config("digits", epochs=1)
    run = tmp_path / "run"
    assert training.prepare_run_dir(str(run), config) == "new"
    assert (run / runs.RUN_MARKER).is_file()
    (run / "notes.txt").write_text("mine")  # a user's file inside a run
    with pytest.raises(FileExistsError, match=r"keras-vae did not write \(notes.txt\)"):
        training.prepare_run_dir(str(run), config, overwrite=True)
    assert (run / "notes.txt").read_text() == "mine"
    (run / "notes.txt").unlink()
    (run / "history.csv").write_text("epoch,loss\n0,1.0\n")
    assert training.prepare_run_dir(str(run), config, overwrite=True) == "new"
    assert not (run / "history.csv").exists()


def test_a_run_written_before_the_marker_is_recognized(tmp_path):
    config = training.make_config("digits", epochs=1)
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text(json.dumps(config))
    (old / "history.csv").write_text("epoch,loss\n0,1.0\n")
    (old / "checkpoints").mkdir()
    assert runs.run_dir_kind(str(old)) == "old-run"
    assert training.prepare_run_dir(str(old), config) == "resume"
    assert (old / runs.RUN_MARKER).is_file()  # marked from now on
    assert training.prepare_run_dir(str(old), config, overwrite=True) == "new"
    # the same config.json beside a file keras-vae never writes is not a run
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps(config))
    (other / "thesis.tex").write_text("\\begin{document}")
    assert runs.run_dir_kind(str(other)) == "foreign"
    with pytest.raises(FileExistsError, match="never deletes such a directory"):
        training.prepare_run_dir(str(other), config, overwrite=True)
    assert sorted(os.listdir(other)) == ["config.json", "thesis.tex"]


def test_an_unwritable_run_dir_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert cli.main([*TRAIN, "--epochs", "1", "--run-dir", str(blocker / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("keras-vae train: error: cannot write to --run-dir")
    assert len(err.splitlines()) == 1
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        assert cli.main([*TRAIN, "--epochs", "1", "--run-dir", str(locked / "run")]) == 2
        assert "cannot write to --run-dir" in capsys.readouterr().err


# ----------------------------------------------------------------------------- item 6
def test_read_idx_streams_only_the_declared_bytes(tmp_path):
    header = bytes([0, 0, 0x08, 3]) + b"".join(d.to_bytes(4, "big") for d in (10, 28, 28))
    images = np.random.default_rng(0).integers(0, 256, (10, 28, 28), dtype=np.uint8)
    path = tmp_path / "evil-images-idx3-ubyte.gz"
    zeros = gzip.compress(bytes(1 << 20), compresslevel=9)  # one member: 1 MiB of zeros
    with open(path, "wb") as handle:  # gzip members concatenate: 200 MiB of trailing zeros
        handle.write(gzip.compress(header + images.tobytes()))
        for _ in range(200):
            handle.write(zeros)
    assert path.stat().st_size < 1 << 20
    code = textwrap.dedent("""
        import resource, sys
        from keras_vae import datasets
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            datasets.read_idx(sys.argv[1])
        except ValueError as err:
            print(err)
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(grew // 1024)  # MiB (ru_maxrss is in KiB on Linux)
    """)
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                            text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
    message, grew = result.stdout.strip().splitlines()
    assert "more data follows the 7840 bytes its header announces" in message, result.stderr
    assert int(grew) < 50  # MiB, against 200 MiB of decompressed trailing data

    # the declared data is read exactly; plain files and cut streams are checked too
    exact = tmp_path / "ok-images-idx3-ubyte.gz"
    exact.write_bytes(gzip.compress(header + images.tobytes()))
    np.testing.assert_array_equal(datasets.read_idx(str(exact)), images)
    plain = tmp_path / "extra-images-idx3-ubyte"
    plain.write_bytes(header + images.tobytes() + b"\0")
    with pytest.raises(ValueError, match="is truncated or corrupt: .* 7841 bytes follow"):
        datasets.read_idx(str(plain))
    cut = tmp_path / "cut-images-idx3-ubyte.gz"
    cut.write_bytes(gzip.compress(header + images.tobytes()[:-3]))
    with pytest.raises(ValueError, match="only 7837 bytes follow"):
        datasets.read_idx(str(cut))
    broken = tmp_path / "broken-images-idx3-ubyte.gz"
    broken.write_bytes(gzip.compress(header + images.tobytes())[:-12] + zlib.compress(b"x"))
    with pytest.raises(ValueError, match="broken-images"):
        datasets.read_idx(str(broken))


# ----------------------------------------------------------------------------- item 8
def test_sizes_above_the_limits_are_refused_before_building(tmp_path, capsys, monkeypatch):
    def no_build(config):
        raise AssertionError("a model was built")

    monkeypatch.setattr(training.config, "build_model", no_build)
    monkeypatch.setattr(training.run, "build_model", no_build)
    for option, value, limit in (("--latent-dim", 1000000, 4096),
                                 ("--epochs", 10 ** 20, 100000),
                                 ("--hidden-units", "100000", 16384),
                                 ("--batch-size", 10 ** 7, 65536),
                                 ("--num-samples", 10 ** 6, 10000)):
        assert cli.main([*TRAIN, option, str(value), "--run-dir", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert f"above the limit of {limit}; pass --allow-large" in err, err
    assert not (tmp_path / "r").exists()
    config = training.make_config("digits", latent_dim=5000, allow_large=True)
    assert config["latent_dim"] == 5000


# ----------------------------------------------------------------------------- item 10
def test_fit_stops_on_a_nan_batch_and_keeps_finite_weights():
    import tensorflow as tf

    data = (np.random.default_rng(0).random((40, 4)) > 0.5).astype("float32")
    data[12, 1] = np.nan  # batch 2 of 4; the first batch (the one checked up front) is clean
    ds = tf.data.Dataset.from_tensor_slices(data).batch(10)
    vae = VAE.kingma_welling(input_dim=4, latent_dim=2, hidden_units=3, seed=0)
    vae.compile(optimizer="adam", steps_per_execution=1)
    before = [w.copy() for w in vae.get_weights()]
    with pytest.raises(NonFiniteLoss, match=r"in epoch 1, batch 2; training stopped"):
        vae.fit(ds, epochs=3, verbose=0)
    after = vae.get_weights()
    assert all(np.isfinite(w).all() for w in after)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))  # epoch 1's start
    vae.compile(optimizer="adam")  # 4 batches per execution: the message names them
    with pytest.raises(NonFiniteLoss, match=r"in epoch 1, one of batches 1-4"):
        vae.fit(ds, epochs=1, verbose=0)
    history = vae.fit(ds, epochs=1, verbose=0, stop_on_nan=False)  # opted out: trains on
    assert np.isnan(history.history["loss"][0])


@pytest.mark.large
def test_fit_stops_on_nan_on_jax_too():
    code = textwrap.dedent("""
        import numpy as np
        import tensorflow as tf
        from keras_vae import VAE, NonFiniteLoss
        data = (np.random.default_rng(0).random((40, 4)) > 0.5).astype("float32")
        data[13, 0] = np.inf  # batch 2 of 4
        ds = tf.data.Dataset.from_tensor_slices(data).batch(10)
        vae = VAE.kingma_welling(input_dim=4, latent_dim=2, hidden_units=3, seed=0)
        vae.compile(optimizer="adam", steps_per_execution=1)
        try:
            vae.fit(ds, epochs=2, verbose=0)
        except NonFiniteLoss as err:
            print(err)
        print(all(np.isfinite(w).all() for w in vae.get_weights()))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO),
                                                  KERAS_BACKEND="jax", JAX_PLATFORMS="cpu"))
    lines = result.stdout.strip().splitlines()
    assert lines and "in epoch 1, batch 2; training stopped" in lines[-2], result.stderr[-2000:]
    assert lines[-1] == "True"


# ----------------------------------------------------------------------------- item 11
@pytest.mark.large
def test_scale_options_reach_the_shape_check(tmp_path, capsys):
    rng = np.random.default_rng(0)
    real = tmp_path / "real.npz"
    np.savez(real, x=rng.normal(0.0, 3.0, (120, 6)).astype("float32"))
    capsys.readouterr()
    assert cli.main(["train", "--dataset", str(real), "--scale", "none", "--likelihood",
                     "gaussian", "--epochs", "1", "--latent-dim", "2", "--hidden-units", "8",
                     "--batch-size", "50", "--run-dir", str(tmp_path / "gauss")]) == 0, \
        capsys.readouterr().err
    summary = json.loads((tmp_path / "gauss" / "summary.json").read_text())
    assert np.isfinite(summary["test"]["neg_elbo"])
    tens = tmp_path / "tens.npz"
    np.savez(tens, x=rng.integers(0, 11, (120, 6)).astype("float32"))  # 0..10
    assert cli.main(["train", "--dataset", str(tens), "--scale", "10", "--epochs", "1",
                     "--latent-dim", "2", "--hidden-units", "8", "--batch-size", "50",
                     "--run-dir", str(tmp_path / "tens")]) == 0, capsys.readouterr().err
    x, _ = training.load_split(json.loads((tmp_path / "tens" / "config.json").read_text()),
                               "train", numpy=True)
    assert x.max() == 1.0 and x.min() == 0.0
    capsys.readouterr()
    assert cli.main(["train", "--dataset", str(real), "--epochs", "1",
                     "--run-dir", str(tmp_path / "auto")]) == 2
    assert "(--scale none) to keep the values" in capsys.readouterr().err


# ----------------------------------------------------------------------------- item 12
def test_zero_counts_give_empty_arrays_and_bad_counts_are_named():
    vae = VAE.kingma_welling(input_dim=4, latent_dim=2, hidden_units=3)
    assert vae.sample(0).shape == (0, 4) and vae.sample(0).dtype == np.float32
    assert vae.decode(np.zeros((0, 2))).shape == (0, 4)
    assert vae.sample(np.int64(3)).shape == (3, 4)
    for n in (-1, 2.7, True, "3"):
        with pytest.raises(ValueError, match="n must be a whole number >= 0"):
            vae.sample(n)
    x = np.random.default_rng(0).random((5, 4)).astype("float32")
    for call in (lambda: vae.encode(x, batch_size=0), lambda: vae.decode(x[:, :2], batch_size=0)):
        with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
            call()
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1 or None, got 0"):
        evaluation.log_likelihood(vae, x, num_samples=3, batch_size=0)
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1 or None, got 0"):
        evaluation.elbo(vae, x, num_samples=3, chunk_size=0)
