"""Fault injection for `keras-vae export` and the bundle runtime, on real folders and real
processes: --overwrite never deletes the source or files an export did not write; the
runtime refuses a bundle it cannot verify and answers hostile input with one line; a killed
export's temporary folders are removed by the next one (and only once their holder is dead)."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

import keras_vae as kv  # noqa: E402
from keras_vae import cli  # noqa: E402
from keras_vae.exporting import bundle  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNTIME = REPO_ROOT / "keras_vae_runtime" / "runtime.py"


def tiny_vae(seed=3):
    keras.utils.set_random_seed(seed)
    return kv.VAE.kingma_welling(16, 2, hidden_units=8)


def snapshot(folder):
    """{relative path: sha256} of every file under folder."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundle") / "b"
    kv.export(tiny_vae(), folder, formats="onnx")
    return folder


# --------------------------------------------------------------------------- --overwrite
@pytest.fixture
def run_dir(tmp_path):
    """A run directory as `keras-vae train` leaves it: model, config, history, checkpoint."""
    run = tmp_path / "runs" / "a"
    (run / "checkpoints").mkdir(parents=True)
    vae = tiny_vae()
    vae.save(run / "model.keras")
    vae.save_weights(run / "checkpoints" / "best.weights.h5")
    (run / "config.json").write_text(json.dumps({"latent_dim": 2}))
    (run / "history.csv").write_text("epoch,loss\n0,10.0\n")
    return run


@pytest.mark.parametrize("target", ["itself", "its_parent"])
def test_overwrite_never_replaces_the_run_being_exported(run_dir, capsys, target):
    out = run_dir if target == "itself" else run_dir.parent
    before = snapshot(run_dir.parent)
    assert cli.main(["export", str(run_dir), "--out", str(out), "--formats", "onnx",
                     "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "never replaces its source" in err and "Traceback" not in err
    assert snapshot(run_dir.parent) == before


def test_overwrite_never_replaces_the_folder_of_the_keras_file(run_dir, capsys):
    before = snapshot(run_dir)
    assert cli.main(["export", str(run_dir / "model.keras"), "--out", str(run_dir),
                     "--formats", "onnx", "--overwrite"]) == 2
    assert "never replaces its source" in capsys.readouterr().err
    assert snapshot(run_dir) == before


def test_overwrite_refuses_a_folder_an_export_did_not_write(tmp_path, run_dir, capsys):
    paper = tmp_path / "paper"
    paper.mkdir()
    (paper / "main.tex").write_text("\\documentclass{article}")
    (paper / "figures").mkdir()
    (paper / "figures" / "a.pdf").write_bytes(b"%PDF-1.4")
    before = snapshot(paper)
    assert cli.main(["export", str(run_dir), "--out", str(paper), "--formats", "onnx",
                     "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "not a folder written by keras-vae export" in err
    assert snapshot(paper) == before


def test_overwrite_replaces_an_export_but_not_files_added_to_it(tmp_path, run_dir, capsys):
    out = tmp_path / "exported"
    assert cli.main(["export", str(run_dir), "--out", str(out), "--formats", "onnx",
                     "--quiet"]) == 0
    assert json.loads((out / "manifest.json").read_text())["written_by"] == "keras-vae export"
    (out / "notes.txt").write_text("my notes")
    before = snapshot(out)
    assert cli.main(["export", str(run_dir), "--out", str(out), "--formats", "onnx",
                     "--overwrite"]) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert snapshot(out) == before
    (out / "notes.txt").unlink()
    assert cli.main(["export", str(run_dir), "--out", str(out), "--formats", "onnx",
                     "onnx_fp16", "--overwrite", "--quiet"]) == 0
    assert (out / "decoder.fp16.onnx").is_file()


def test_an_export_inside_the_run_directory_is_allowed(run_dir):
    before = snapshot(run_dir)
    assert cli.main(["export", str(run_dir), "--out", str(run_dir / "export"), "--formats",
                     "onnx", "--quiet"]) == 0
    after = snapshot(run_dir)
    assert {k: v for k, v in after.items() if not k.startswith("export/")} == before


# --------------------------------------------------------------------------- the runtime
def runtime(*args):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, str(RUNTIME), *map(str, args)], capture_output=True,
                          text=True, timeout=120, env=env)


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def copy_bundle(src, dst, names=None):
    dst.mkdir()
    for path in src.iterdir():
        if path.is_file() and (names is None or path.name in names):
            (dst / path.name).write_bytes(path.read_bytes())
    return dst


def test_runtime_refuses_a_bundle_without_manifest_unless_no_verify(bundle_dir, tmp_path):
    """A swapped decoder with the manifest removed must not run silently."""
    folder = copy_bundle(bundle_dir, tmp_path / "b", {"encoder.onnx", "decoder.onnx"})
    assert_one_line_error(runtime("info", folder), "manifest.json does not exist",
                          "--no-verify")
    proc = runtime("info", folder, "--no-verify")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["latent_dim"] == 2


@pytest.mark.parametrize("content, needle", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a keras-vae manifest"),
    ('{"latent_dim": 2}', "malformed: 'input_shape'"),
    ('{"latent_dim": 2, "input_shape": [16], "likelihood": "bernoulli", "posterior": '
     '"diagonal", "artifacts": [{"files": [{"path": 3}]}]}', "malformed: an artifact"),
])
def test_runtime_names_a_malformed_manifest_in_one_line(bundle_dir, tmp_path, content, needle):
    folder = copy_bundle(bundle_dir, tmp_path / "b")
    (folder / "manifest.json").write_text(content)
    assert_one_line_error(runtime("sample", folder, "--out", tmp_path / "s.png"), needle)


def test_runtime_hostile_inputs_get_one_line(bundle_dir, tmp_path):
    out = tmp_path / "s.png"
    assert_one_line_error(runtime("sample", bundle_dir, "--n", "0", "--out", out), "--n")
    assert_one_line_error(runtime("sample", bundle_dir, "--n", "-3", "--out", out), "--n")
    x = np.random.default_rng(0).random((4, 16)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    assert_one_line_error(runtime("score", bundle_dir, "--x", tmp_path / "x.npy", "--samples",
                                  "-1"), "--samples")
    for name, z in (("nan", np.full((2, 2), np.nan)), ("inf", np.full((2, 2), np.inf)),
                    ("big", np.full((2, 2), 1e300))):
        np.save(tmp_path / f"{name}.npy", z)
        assert_one_line_error(runtime("decode", bundle_dir, "--z", tmp_path / f"{name}.npy",
                                      "--out", out), "NaN or infinite")
    np.save(tmp_path / "complex.npy", x.astype("complex64"))
    assert_one_line_error(runtime("encode", bundle_dir, "--x", tmp_path / "complex.npy",
                                  "--out", tmp_path / "z.npy"), "complex")
    np.save(tmp_path / "zc.npy", np.ones((2, 2), "complex128"))
    assert_one_line_error(runtime("decode", bundle_dir, "--z", tmp_path / "zc.npy", "--out",
                                  out), "complex")
    np.save(tmp_path / "wrong.npy", np.zeros((3, 5), "float32"))
    assert_one_line_error(runtime("encode", bundle_dir, "--x", tmp_path / "wrong.npy", "--out",
                                  tmp_path / "z.npy"), "shape (3, 5)", "(n, 16)")
    assert_one_line_error(runtime("decode", bundle_dir, "--z", tmp_path / "wrong.npy", "--out",
                                  out), "(n, 2)")
    (tmp_path / "a_file").write_text("x")
    for target in (tmp_path / "missing" / "s.png", tmp_path / "a_file" / "s.png"):
        assert_one_line_error(runtime("sample", bundle_dir, "--n", "2", "--out", target),
                              "cannot write")
    # empty in, empty out where that means something
    np.save(tmp_path / "empty.npy", np.zeros((0, 16), "float32"))
    proc = runtime("score", bundle_dir, "--x", tmp_path / "empty.npy", "--out",
                   tmp_path / "scores.npy")
    assert proc.returncode == 0, proc.stderr
    assert np.load(tmp_path / "scores.npy").shape == (0,)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_runtime_read_only_output_folder(bundle_dir, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert_one_line_error(runtime("sample", bundle_dir, "--n", "2", "--out",
                                      locked / "s.png"), "not writable")
    finally:
        locked.chmod(0o700)


def test_runtime_api_empty_and_bad_counts(bundle_dir):
    from keras_vae_runtime import ExportedVAE, RuntimeInputError

    vae = ExportedVAE(bundle_dir)
    x_mean, z = vae.sample(0, seed=0)
    assert x_mean.shape == (0, 16) and z.shape == (0, 2)
    assert vae.encode(np.zeros((0, 16)))[0].shape == (0, 2)
    for bad in (-1, 2.7, True):
        with pytest.raises(RuntimeInputError, match="integer"):
            vae.sample(bad)
    with pytest.raises(RuntimeInputError, match="samples"):
        vae.anomaly_score(np.zeros((2, 16)), samples=-1)


def test_only_int8_files_point_to_the_precision_flag(tmp_path, monkeypatch):
    # the budget is not what this test is about: an untrained net quantizes badly
    monkeypatch.setitem(kv.exporting.ERROR_BUDGETS, "onnx_int8", {"max": 10.0, "mean": 10.0})
    keras.utils.set_random_seed(0)
    vae = kv.VAE.kingma_welling(16, 2, hidden_units=8)
    data = (np.random.default_rng(0).random((300, 16)) < 0.3).astype("float32")
    full = tmp_path / "full"
    kv.export(vae, full, formats=("onnx", "onnx_int8", "onnx_fp16"), data=data)
    folder = copy_bundle(full, tmp_path / "int8", {"encoder.int8.onnx", "decoder.int8.onnx",
                                                   "manifest.json", "vae_runtime.py"})
    proc = subprocess.run([sys.executable, "vae_runtime.py", "info", "."], cwd=folder,
                          capture_output=True, text=True, timeout=120)
    assert_one_line_error(proc, "decoder.onnx does not exist", "--precision int8")
    proc = subprocess.run([sys.executable, "vae_runtime.py", "info", ".", "--precision", "int8"],
                          cwd=folder, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and json.loads(proc.stdout)["precisions_here"] == ["int8"]


# --------------------------------------------------------------------------- killed exports
KILLED_EXPORT = textwrap.dedent("""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import keras, keras_vae as kv
    keras.utils.set_random_seed(0)
    vae = kv.VAE.kingma_welling(16, 2, hidden_units=8)
    print("exporting", flush=True)
    kv.export(vae, sys.argv[1], formats=("saved_model", "onnx", "onnx_fp16", "tflite"))
""")


@pytest.mark.large  # a TensorFlow process, killed
def test_a_killed_exports_leftovers_are_cleaned_by_the_next_export(tmp_path, monkeypatch):
    scratch_root = tmp_path / "tmpdir"
    scratch_root.mkdir()
    parent = tmp_path / "exports"
    parent.mkdir()
    out = parent / "bundle"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TMPDIR=str(scratch_root),
               TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_EXPORT, str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 300
    partial = scratch = []
    while time.monotonic() < deadline and proc.poll() is None:
        partial = list(parent.glob(".bundle.partial-*"))
        scratch = list(scratch_root.glob("keras-vae-export-*"))
        if partial and scratch and any(any(p.rglob("*.pb")) for p in partial):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the export ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert partial and scratch and not out.exists()
    holder = json.loads((partial[0] / bundle.HOLDER_FILE).read_text())
    assert holder["pid"] == proc.pid

    # A folder whose holder is alive, and one without a holder file, are left alone.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        alive = scratch_root / "keras-vae-export-alive"
        alive.mkdir()
        (alive / bundle.HOLDER_FILE).write_text(json.dumps({
            "pid": sleeper.pid, "host": __import__("socket").gethostname(),
            "created": time.time()}))
        unknown = parent / ".bundle.partial-unknown"
        unknown.mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(scratch_root))
        kv.export(tiny_vae(), out, formats="onnx")
        assert not [p for p in partial + scratch if p.exists()]
        assert alive.is_dir() and unknown.is_dir()
        assert (out / "manifest.json").is_file()
        assert not list(scratch_root.glob("keras-vae-export-*"))[1:]  # only the live one
    finally:
        sleeper.kill()
        sleeper.wait()
