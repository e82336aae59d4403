"""The `keras-vae` command line end to end: train -> evaluate -> sample in subprocesses, resume
after a killed run, refusals to overwrite, the NaN stop and the bad-input messages.

Numbers are checked against ground truth: the closed-form KL of the saved encoder, a Monte Carlo
estimate of the reconstruction term, the pixels of the model's own samples.
"""

import csv
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from matplotlib import image as mpimg

from keras_vae import cli, networks, plots, training

REPO = Path(__file__).resolve().parents[1]
TRAIN_ARGS = ["--dataset", "digits", "--model", "kingma-welling", "--latent-dim", "2",
              "--hidden-units", "64", "--batch-size", "100", "--seed", "3"]


def cli_env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def run_cli(*args, timeout=300, **env):
    return subprocess.run([sys.executable, "-m", "keras_vae", *map(str, args)],
                          env={**cli_env(), **env}, capture_output=True, text=True,
                          timeout=timeout)


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    args = ["train", *TRAIN_ARGS, "--epochs", "4", "--kl-warmup", "2", "--early-stopping", "3",
            "--run-dir", run_dir]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, args, result


# ----------------------------------------------------------------------------- end to end
def test_train_writes_a_complete_run_directory(trained_run):
    run_dir, _, result = trained_run
    summary = json.loads((run_dir / "summary.json").read_text())
    last = result.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"test -ELBO: ([\d.]+) nats per example \(reconstruction ([\d.]+), "
                         r"KL ([\d.]+); 180 examples, 4 epochs\)", last)
    assert match, last
    assert float(match[1]) == pytest.approx(summary["test"]["neg_elbo"], abs=5e-4)
    assert "Epoch 4/4" in result.stdout and "━" in result.stdout  # Keras progress bar
    for name in ("config.json", "model.keras", "history.csv", "checkpoints/best.weights.h5",
                 "curves.png", "reconstructions.png", "samples.png", "latent.png",
                 "manifold.png"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "logs" / "train").glob("events.out.tfevents.*"))
    assert not (run_dir / "backup").exists()  # removed once the model is saved
    rows = read_rows(run_dir / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    # KL warm-up over 2 epochs of 15 batches: beta of each epoch's last batch, then 1.
    np.testing.assert_allclose([float(r["beta"]) for r in rows], [14 / 30, 29 / 30, 1, 1],
                               rtol=1e-6)
    for r in rows:  # -ELBO = reconstruction + KL, whatever beta was
        assert float(r["val_neg_elbo"]) == pytest.approx(
            float(r["val_reconstruction"]) + float(r["val_kl"]), rel=1e-5)
    # the saved model holds the weights of the best validation epoch
    best = int(np.argmin([float(r["val_neg_elbo"]) for r in rows])) + 1
    assert summary["best_epoch"] == best


@pytest.mark.parametrize("objective", ["iwae", "iwae_dreg"])
def test_train_on_the_iwae_bound(tmp_path, capsys, objective):
    """--objective iwae (or iwae_dreg, its doubly reparameterized gradient) trains on the
    importance-weighted bound: its loss is below the -ELBO reported beside it every epoch (the
    bound is tighter, Burda et al.), the best epoch is the best validation bound, and the
    saved model keeps the objective."""
    run_dir = tmp_path / objective
    assert cli.main(["train", *TRAIN_ARGS, "--epochs", "3", "--objective", objective,
                     "--num-samples", "5", "--early-stopping", "5", "--run-dir",
                     str(run_dir)]) == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["objective"] == objective and config["num_samples"] == 5
    rows = read_rows(run_dir / "history.csv")
    for r in rows:
        assert float(r["loss"]) < float(r["neg_elbo"]) - 0.1, r
        assert float(r["val_loss"]) < float(r["val_neg_elbo"]) - 0.1, r
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["best_epoch"] == int(np.argmin([float(r["val_loss"]) for r in rows])) + 1
    saved = keras.saving.load_model(run_dir / "model.keras")
    assert saved.objective == objective and saved.num_samples == 5
    with pytest.raises(SystemExit) as exit_info:  # argparse's own check of the choices
        cli.main(["train", "--objective", "vi", "--run-dir", str(tmp_path / "x")])
    assert exit_info.value.code == 2 and "invalid choice: 'vi'" in capsys.readouterr().err


def test_a_run_written_before_the_objective_option_still_resumes(tmp_path):
    config = training.make_config("digits", epochs=3)
    run_dir = tmp_path / "old"
    assert training.prepare_run_dir(str(run_dir), config) == "new"
    old = json.loads((run_dir / "config.json").read_text())
    del old["objective"]  # as written before the option existed: it meant the ELBO
    (run_dir / "config.json").write_text(json.dumps(old))
    assert training.prepare_run_dir(str(run_dir), config) == "resume"
    with pytest.raises(FileExistsError, match="objective: 'elbo' -> 'iwae'"):
        training.prepare_run_dir(str(run_dir), {**config, "objective": "iwae"})


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_config_rebuilds_the_model(trained_run):
    run_dir, _, _ = trained_run
    config = json.loads((run_dir / "config.json").read_text())
    assert config["dataset"] == "digits" and config["input_shape"] == [64]
    assert config["image_shape"] == [8, 8, 1] and config["kl_warmup"] == 2
    saved = keras.saving.load_model(run_dir / "model.keras")
    rebuilt = training.build_model(config)
    rebuilt.load_weights(run_dir / "model.keras")
    x, _ = training.load_split(config, "test", numpy=True)
    for a, b in zip(saved.encode(x), rebuilt.encode(x)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_evaluate_reports_the_elbo_of_the_saved_model(trained_run):
    run_dir, _, _ = trained_run
    result = run_cli("evaluate", run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout)
    assert printed == json.loads((run_dir / "evaluation.json").read_text())
    assert printed["num_examples"] == 180 and printed["split"] == "test"
    assert printed["neg_elbo"] == pytest.approx(printed["reconstruction"] + printed["kl"],
                                                rel=1e-5)
    # Ground truth from the saved encoder and decoder, independently of the package:
    vae = keras.saving.load_model(run_dir / "model.keras")
    config = json.loads((run_dir / "config.json").read_text())
    x, _ = training.load_split(config, "test", numpy=True)
    mean, log_var = vae.encode(x)
    kl = 0.5 * np.sum(mean ** 2 + np.exp(log_var) - 1.0 - log_var, axis=1)  # THEORY eq [27]
    assert printed["kl"] == pytest.approx(kl.mean(), rel=1e-4)
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(200):
        z = mean + np.exp(0.5 * log_var) * rng.standard_normal(mean.shape)
        logits = keras.ops.convert_to_numpy(vae.decoder(z.astype("float32")))
        # -ln p(x|z) of a Bernoulli from logits: softplus(l) - x * l, summed (eq [32]-[33])
        draws.append(np.sum(np.logaddexp(0.0, logits) - x * logits, axis=1))
    draws = np.array(draws)  # (200, n)
    # evaluate draws one z per example: its standard error around the expectation (estimated
    # here with 200 draws) is sqrt(mean_i Var_i / n).
    single_pass_se = np.sqrt(draws.var(0).mean() / len(x))
    assert abs(printed["reconstruction"] - draws.mean()) < 5 * single_pass_se + 1e-3


def test_evaluate_nll_matches_an_independent_importance_sampling_estimate(trained_run):
    run_dir, _, _ = trained_run
    result = run_cli("evaluate", run_dir, "--split", "valid", "--nll-samples", 500, "--seed", 3)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout)
    assert printed == json.loads((run_dir / "evaluation-valid.json").read_text())
    assert printed["nll_samples"] == 500 and printed["split"] == "valid"
    # ln p(x) ~ logmeanexp_k [ln p(x|z_k) + ln p(z_k) - ln q(z_k|x)], z_k ~ q(z|x) (THEORY
    # "Importance-weighted estimate"), in NumPy from the saved model with independent draws.
    vae = keras.saving.load_model(run_dir / "model.keras")
    config = json.loads((run_dir / "config.json").read_text())
    x, _ = training.load_split(config, "valid", numpy=True)
    mean, log_var = vae.encode(x)
    std = np.exp(0.5 * log_var)
    eps = np.random.default_rng(1).standard_normal((500,) + mean.shape)
    z = mean + std * eps                                                    # (k, n, K)
    logits = keras.ops.convert_to_numpy(vae.decoder(z.reshape(-1, mean.shape[1]).astype(
        "float32"))).reshape(500, len(x), -1)
    log_px_z = -np.sum(np.logaddexp(0.0, logits) - x * logits, axis=2)
    log_pz = -0.5 * np.sum(z ** 2 + np.log(2 * np.pi), axis=2)
    log_qz = -0.5 * np.sum(eps ** 2 + np.log(2 * np.pi) + log_var, axis=2)
    log_w = log_px_z + log_pz - log_qz
    log_px = np.logaddexp.reduce(log_w, axis=0) - np.log(500)
    assert printed["nll"] == pytest.approx(-log_px.mean(), abs=0.05)
    assert printed["nll"] < -log_w.mean(0).mean()          # tighter than the ELBO
    assert printed["bits_per_dim"] == pytest.approx(printed["nll"] / (64 * np.log(2)), rel=1e-5)


def test_sample_writes_the_models_samples(trained_run, tmp_path, capsys):
    run_dir, _, _ = trained_run
    out = tmp_path / "grid.png"
    result = run_cli("sample", run_dir, "-n", 10, "--out", out, "--seed", 4)
    assert result.returncode == 0, result.stderr[-3000:]
    vae = keras.saving.load_model(run_dir / "model.keras")
    expected = plots.save_image_grid(plots.as_images(vae.sample(10, seed=4), (8, 8, 1)),
                                     tmp_path / "expected.png")
    png = mpimg.imread(out)
    assert png.shape == expected.shape[:2] == (3 * 32 + 2 * 4, 4 * 32 + 3 * 4)
    np.testing.assert_allclose(png, expected[..., 0], atol=1.5 / 255)
    # refuses to overwrite, then replaces with --overwrite
    assert cli.main(["sample", str(run_dir), "-n", "10", "--out", str(out)]) == 2
    assert "exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert cli.main(["sample", str(run_dir), "-n", "4", "--out", str(out), "--overwrite"]) == 0
    assert mpimg.imread(out).shape == (2 * 32 + 4, 2 * 32 + 4)


def test_reconstruct_shows_test_images_above_reconstructions(trained_run, tmp_path):
    run_dir, _, _ = trained_run
    out = tmp_path / "recon.png"
    assert cli.main(["reconstruct", str(run_dir), "-n", "5", "--out", str(out)]) == 0
    vae = keras.saving.load_model(run_dir / "model.keras")
    config = json.loads((run_dir / "config.json").read_text())
    x, _ = training.load_split(config, "test", limit=5, numpy=True)
    png = mpimg.imread(out)
    assert png.shape == (32 + 8 + 32, 5 * 32 + 4 * 4)  # 8x8 tiles enlarged 4x, padded by 4
    top, bottom = png[:32], png[32 + 8:]
    np.testing.assert_allclose(top[::4, 0:32:4], x[0].reshape(8, 8), atol=0.5 / 255 + 1e-6)
    np.testing.assert_allclose(bottom[::4, 4 * 36:4 * 36 + 32:4],
                               vae.reconstruct(x[4:5]).reshape(8, 8), atol=1.5 / 255)


# ----------------------------------------------------------------------------- resume
# Runs `keras-vae ARGS`, killing itself (SIGKILL, no cleanup) right after the backup of epoch
# KILL_AFTER_EPOCH (counted from 1) is written: a kill between two epochs, at a known epoch.
KILL_AFTER_BACKUP = """
import os, signal, sys
import keras
backup_epoch_end = keras.callbacks.BackupAndRestore.on_epoch_end
def on_epoch_end(self, epoch, logs=None):
    backup_epoch_end(self, epoch, logs)
    if epoch + 1 == int(os.environ["KILL_AFTER_EPOCH"]):
        os.kill(os.getpid(), signal.SIGKILL)
keras.callbacks.BackupAndRestore.on_epoch_end = on_epoch_end
from keras_vae_cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_killed_training_resumes_from_its_saved_epoch(tmp_path):
    run_dir = tmp_path / "run"
    epochs = 5
    args = ["train", *TRAIN_ARGS, "--epochs", epochs, "--run-dir", run_dir]
    metadata = run_dir / "backup" / "training_metadata.json"
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_BACKUP, *map(str, args)],
                            env={**cli_env(), "KILL_AFTER_EPOCH": "2"}, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]  # killed, not finished
    saved_epoch = json.loads(metadata.read_text())["epoch"]
    assert 1 <= saved_epoch < epochs and not (run_dir / "summary.json").exists()
    assert saved_epoch == 2

    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resuming {run_dir} after epoch {saved_epoch} of {epochs}" in result.stdout
    assert f"Epoch {saved_epoch + 1}/{epochs}" in result.stdout
    assert f"Epoch 1/{epochs}" not in result.stdout
    rows = read_rows(run_dir / "history.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(epochs))  # each epoch exactly once
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_from_epoch"] == saved_epoch and summary["epochs_trained"] == epochs


# ----------------------------------------------------------------------------- refusals
def test_finished_run_is_not_overwritten(trained_run, capsys):
    run_dir, args, _ = trained_run
    before = (run_dir / "model.keras").stat().st_mtime_ns
    assert cli.main([str(a) for a in args]) == 2
    assert "holds a finished run" in capsys.readouterr().err
    changed = [str(a) for a in args]
    changed[changed.index("--epochs") + 1] = "9"
    assert cli.main(changed) == 2
    assert "holds a run with other options (epochs: 4 -> 9)" in capsys.readouterr().err
    assert (run_dir / "model.keras").stat().st_mtime_ns == before


def test_overwrite_replaces_a_run_but_never_a_foreign_folder(tmp_path, capsys):
    run_dir = tmp_path / "run"
    base = ["train", *TRAIN_ARGS, "--epochs", "1", "--run-dir", str(run_dir)]
    assert cli.main(base) == 0
    first = json.loads((run_dir / "summary.json").read_text())
    conv = [a for a in base[:-2] if a != "--hidden-units" and a != "64"]
    conv[conv.index("kingma-welling")] = "conv"
    assert cli.main(conv + ["--run-dir", str(run_dir), "--overwrite"]) == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"] == "conv" and config["input_shape"] == [8, 8, 1]  # images, not vectors
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary != first and summary["epochs_trained"] == 1
    assert keras.saving.load_model(run_dir / "model.keras").encoder.input_shape == (None, 8, 8, 1)
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"precious")
    capsys.readouterr()
    assert cli.main(base[:-1] + [str(foreign), "--overwrite"]) == 2
    assert "is not a keras-vae run directory" in capsys.readouterr().err
    assert (foreign / "holiday.jpg").read_bytes() == b"precious"


# ----------------------------------------------------------------------------- NaN stop
def test_nan_loss_stops_with_a_clear_message(tmp_path, capsys):
    run_dir = tmp_path / "nan"
    code = cli.main(["train", *TRAIN_ARGS, "--epochs", "3", "--lr", "1e9",
                     "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 1
    assert re.search(r"the loss became NaN or infinite at epoch 1, batch \d+; training "
                     r"stopped\. Lower --lr \(now 1e\+09\)", err), err
    assert not (run_dir / "model.keras").exists() and not (run_dir / "summary.json").exists()


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("args, message", [
    (["--dataset", "minst"], "Unknown dataset 'minst'. Known names: digits, mnist"),
    (["--dataset", "missing.npz"], "Dataset file not found: "),
    (["--latent-dim", "0"], "--latent-dim must be an integer > 0, got 0"),
    (["--epochs", "-1"], "--epochs must be an integer > 0"),
    (["--lr", "0"], "--lr must be a number > 0"),
    (["--hidden-units", "64,x"], "--hidden-units must be integers separated by commas"),
    (["--scale", "big"], "--scale must be auto, none or a positive number"),
    (["--scale", "none"], "do not combine --scale none with --likelihood bernoulli"),
    (["--model", "kingma-welling", "--hidden-units", "8,8"], "exactly one hidden layer"),
])
def test_bad_train_options_are_named(tmp_path, capsys, args, message):
    code = cli.main(["train", "--run-dir", str(tmp_path / "run"), *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "model.keras").exists()


@pytest.mark.slow  # the PixelVAE's fit and draws are covered in test_pixelcnn and test_bundles
def test_train_and_sample_a_pixel_cnn_vae(tmp_path):
    """--model pixel-cnn trains the autoregressive decoder on images; `sample` then draws
    binary images pixel by pixel (no grey levels, unlike E[x|z] of the other models)."""
    run_dir = tmp_path / "pixel"
    args = [a for a in TRAIN_ARGS if a not in ("--hidden-units", "64")]
    args[args.index("kingma-welling")] = "pixel-cnn"
    assert cli.main(["train", *args, "--epochs", "2", "--run-dir", str(run_dir)]) == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"] == "pixel-cnn" and config["input_shape"] == [8, 8, 1]
    vae = keras.saving.load_model(run_dir / "model.keras")
    assert isinstance(vae.decoder, networks.PixelCNNDecoder)
    out = tmp_path / "grid.png"
    assert cli.main(["sample", str(run_dir), "-n", "4", "--out", str(out)]) == 0
    assert set(np.unique(mpimg.imread(out)[:32, :32])) == {0.0, 1.0}


def test_conv_on_flat_vectors_is_refused(tmp_path, capsys):
    path = tmp_path / "flat.npz"
    np.savez(path, x=np.random.default_rng(0).random((50, 10)))
    assert cli.main(["train", "--dataset", str(path), "--model", "conv",
                     "--run-dir", str(tmp_path / "run")]) == 2
    assert "not square images" in capsys.readouterr().err


def test_commands_on_a_folder_that_is_not_a_finished_run(tmp_path, capsys):
    assert cli.main(["evaluate", str(tmp_path)]) == 2
    assert "is not a keras-vae run directory: no config.json" in capsys.readouterr().err
    (tmp_path / "config.json").write_text("{}")
    assert cli.main(["sample", str(tmp_path), "--out", str(tmp_path / "s.png")]) == 2
    assert "has no model.keras yet" in capsys.readouterr().err
    assert cli.main(["sample", str(tmp_path), "--out", str(tmp_path / "s.jpg")]) == 2
    assert "expected a file name ending in .png or .npy" in capsys.readouterr().err
    assert cli.main(["reconstruct", str(tmp_path), "--out", str(tmp_path / "no" / "r.png")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_train_on_jax_then_export_under_tensorflow(tmp_path):
    """The README's advice for CPU training: KERAS_BACKEND=jax for `train`, TensorFlow (the
    default) for `export`, whose parity check (1e-5 against the Keras model) must pass."""
    run_dir, out = tmp_path / "run", tmp_path / "export"
    result = run_cli("train", *TRAIN_ARGS, "--epochs", 2, "--run-dir", run_dir,
                     KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs_trained"] == 2 and summary["test"]["neg_elbo"] < 64 * np.log(2)
    result = run_cli("export", run_dir, "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    measured = {a["path"]: a["scaled_max_abs_diff"] for a in manifest["artifacts"]}
    assert {"saved_model/encoder/1", "saved_model/decoder/1", "encoder.onnx",
            "decoder.onnx"} <= set(measured)
    assert max(measured.values()) <= 1e-5
