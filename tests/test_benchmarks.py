"""The benchmark scripts' --quick modes, so they cannot rot (synthetic or bundled data only).

Each check is on the numbers a benchmark writes, not only that it ran: the importance-weighted
NLL is at most -ELBO up to Monte Carlo error, ratios are consistent with the rates, AUROC is a
probability and the ROC curve is a PNG.
"""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "benchmarks")

# Each test runs a benchmark script end to end in a subprocess (a minute or more on 2 cores):
# `pytest -m slow` runs them.
pytestmark = [pytest.mark.large, pytest.mark.slow]


def run(script, *args, timeout=600):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, os.path.join(BENCH, script), "--quick", *args],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_likelihood_quick_nll_is_below_the_elbo_resumes_and_sweeps_memory(tmp_path):
    results = tmp_path / "likelihood.json"
    out_dir = tmp_path / "nll"
    run("likelihood.py", "--models", "kingma_welling,conv", "--out-dir", str(out_dir),
        "--results", str(results))
    data = json.loads(results.read_text())
    assert set(data["models"]) == {"kingma_welling", "conv"}
    for name, res in data["models"].items():
        test = res["test"]
        assert test["num_samples"] == 20 and test["n"] == 200
        # ln p(x) >= ELBO in expectation: the NLL may exceed -ELBO only by Monte Carlo error.
        assert test["nll"] <= test["neg_elbo"] + 4 * test["nll_stderr"] + 0.05
        assert test["neg_elbo"] == pytest.approx(test["reconstruction"] + test["kl"], abs=0.01)
        assert 0 < test["bits_per_dim"] < 1.1  # 64 binary pixels: ~1 bit each at most
        assert res["epochs_run"] == 3 and res["evaluation_peak_rss_mib"] > 0
        assert (out_dir / name / "model.keras").exists()
    # Resumable: a second run finds the results and skips the work.
    stdout = run("likelihood.py", "--models", "kingma_welling", "--out-dir", str(out_dir),
                 "--results", str(results))
    assert "skipping" in stdout
    # The memory sweep: one fresh process per memory bound, each reporting its peak.
    run("likelihood.py", "--memory-sweep", "--out-dir", str(out_dir), "--results", str(results))
    sweep = json.loads((tmp_path / "evaluation_memory.json").read_text())["runs"]
    assert [r["max_elements"] for r in sweep] == [2 ** 21, 2 ** 23, 2 ** 25]
    assert all(r["rss_increase_mib"] >= 0 and r["num_samples"] == 20 for r in sweep)


# Stand-ins for the peer scripts of the shared bench folder (a user's clone has none): same command
# line and JSON line, fixed rates, so the comparison logic is checked on known numbers. The
# PyTorch stand-in reports 1000 samples/s per OpenMP thread, which checks the 1-thread run's
# environment too. The real peers run only in the full benchmark.
PEER_STUB = """import json, os, sys
rate = {rate}
print("log line before the result")
print(json.dumps({{"peer": "{peer}", "seconds_per_epoch": 1.0, "samples_per_second": rate,
                  "last_train_loss": 100.0, "argv": sys.argv[1:]}}))
"""


def test_throughput_quick_ratios_are_to_the_faster_peer_of_known_rates(tmp_path):
    bench_dir = tmp_path / "bench"
    bench_dir.mkdir()
    (bench_dir / "torch_reference.py").write_text(PEER_STUB.format(
        peer="torch", rate='1000.0 * int(os.environ.get("OMP_NUM_THREADS", "2"))'))
    (bench_dir / "keras_example_reference.py").write_text(PEER_STUB.format(
        peer="keras-example", rate="3000.0"))
    results = tmp_path / "throughput.json"
    run("throughput.py", "--variants", "default,no_xla,jax", "--results", str(results),
        "--bench-dir", str(bench_dir))
    data = json.loads(results.read_text())
    rates = {k: v["median_samples_per_second"] for k, v in data["results"].items()}
    assert {"keras-vae:default", "keras-vae:no_xla", "keras-vae:jax"} <= set(rates)
    assert data["results"]["keras-vae:default"]["backend"] == "tensorflow"
    assert data["results"]["keras-vae:jax"]["backend"] == "jax"  # the variant's backend ran
    assert all(r > 0 for r in rates.values())
    # Same model, data and seed: the lever changes speed, not what is learned.
    assert abs(data["results"]["keras-vae:default"]["last_train_loss"]
               - data["results"]["keras-vae:no_xla"]["last_train_loss"]) < 1.0
    assert (rates["torch"], rates["torch-1-thread"], rates["keras-example"]) == (2000, 1000, 3000)
    assert data["fastest_peer"] == "keras-example"
    for name in ("keras-vae:default", "keras-vae:no_xla", "keras-vae:jax"):
        assert data["ratio_to_fastest_peer"][name] == pytest.approx(rates[name] / 3000, abs=0.01)


def test_anomaly_quick_separates_a_held_out_digit_near_the_fitted_fpr(tmp_path):
    run("anomaly.py", "--out-dir", str(tmp_path))
    data = json.loads((tmp_path / "anomaly.json").read_text())
    (res,) = data["per_digit"]
    for method in ("elbo", "iwae"):
        assert 0.0 <= res[method]["auroc"] <= 1.0
        # Threshold fitted at 5% FPR on validation data: the test FPR is near it.
        assert res[method]["fpr"] <= 0.15
    # Even 5 epochs separate a held-out digit better than chance.
    assert res["elbo"]["auroc"] > 0.6
    png = (tmp_path / "anomaly_roc.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_zoo_candidates_quick_entries_describe_their_own_files(tmp_path):
    """Two candidates in parallel processes through zoo.build on synthetic data: each writes its
    entry and weight file, and the entry describes that file and its own recipe."""
    import hashlib

    out = tmp_path / "candidates"
    stdout = run("zoo_candidates.py", "--out", str(out), "--names",
                 "iwae_mnist_z50,conv_mnist_z32_ema")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == [] and set(summary["candidates"]) == {
        "iwae_mnist_z50", "conv_mnist_z32_ema"}
    for name, entry in summary["candidates"].items():
        assert name in stdout
        weights = out / f"{name}.weights.h5"
        assert hashlib.sha256(weights.read_bytes()).hexdigest() == entry["sha256"]
        training, results = entry["training"], entry["results"]
        assert training["epochs"] == 2 and training["hardware"].startswith("CPU")
        assert results["nll_samples"] == 20 and results["nll_examples"] == 10
        # ln p(x) >= ELBO: the NLL may exceed the same examples' -ELBO only by MC error.
        same = results.get("nll_examples_neg_elbo", results["test_neg_elbo"])
        assert results["test_nll"] <= same + 4 * results["test_nll_stderr"] + 0.5
    # A second run into the same folder refuses to replace those files without --overwrite.
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    again = subprocess.run([sys.executable, os.path.join(BENCH, "zoo_candidates.py"), "--quick",
                            "--out", str(out), "--names", "iwae_mnist_z50"],
                           capture_output=True, text=True, env=env, timeout=120, cwd=REPO)
    assert again.returncode != 0 and "pass --overwrite" in again.stderr
    assert hashlib.sha256((out / "iwae_mnist_z50.weights.h5").read_bytes()).hexdigest() \
        == summary["candidates"]["iwae_mnist_z50"]["sha256"]
    iwae = summary["candidates"]["iwae_mnist_z50"]
    assert iwae["config"]["objective"] == "iwae"  # early-stopped on val_loss (the bound)
    assert summary["candidates"]["conv_mnist_z32_ema"]["train"]["ema_momentum"] == 0.999
