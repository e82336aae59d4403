"""Decode latency of the exported web page in headless Chromium, against onnxruntime in Python.

    python benchmarks/web_latency.py      # kw_mnist_z20 and conv_mnist_z16 from weights/

Needs Chromium (apt-get install chromium) and onnxruntime-web (npm install
onnxruntime-web@VERSION in the repository, see keras_vae.web.ORT_WEB_VERSION).

For each model it exports the web bundle (`formats=("web",)`), serves it from 127.0.0.1 and
opens the page in headless Chromium in real time (no virtual time); the page times its decoder
itself (onnxruntime-web 1.30, wasm backend, one thread): the mean wall time of a decode call over
200 calls at batch 1 and 30 calls at batch 64 (the sample grid), after warm-up calls, and
POSTs the numbers back. The peer, in the same run and the same process turns: the same
decoder.onnx in onnxruntime's Python API (CPU provider, one intra-op thread), timed the same
way. Rounds alternate browser and native; each reports the median of its rounds. Results go to
benchmarks/results/web_latency.json.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402


def native_decode_ms(path, k, n, warmup, runs):
    """Mean ms per decoder call of onnxruntime (Python, CPU, one thread) at batch n."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    from keras_vae.web import prior_normals

    z = prior_normals(7, n, k)
    for _ in range(warmup):
        session.run(None, {"z": z})
    start = time.perf_counter()
    for _ in range(runs):
        session.run(None, {"z": z})
    return (time.perf_counter() - start) / runs * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="kw_mnist_z20,conv_mnist_z16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results" /
                                                 "web_latency.json"))
    args = parser.parse_args()

    import keras_vae as kv
    from keras_vae.web import browser

    chromium = browser.find_chromium()
    if chromium is None:
        sys.exit("web_latency.py: error: Chromium was not found; apt-get install chromium")
    version = subprocess.run([chromium, "--version"], capture_output=True, text=True).stdout.strip()
    results = {"chromium": version, "machine": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            vae = kv.zoo.load(name, base_url=str(REPO / "weights"), verbose=False)
            folder = Path(tmp) / name
            kv.export(vae, folder, formats=("web",))
            browser_runs, native_runs = [], []
            for _ in range(args.rounds):
                report = browser.page_report(folder)
                if report.get("error"):
                    sys.exit(f"web_latency.py: error: the page failed: {report['error']}")
                assert report["selfcheck"]["ok"] == "1", report["selfcheck"]
                browser_runs.append((float(report["latency"]["batch1Ms"]),
                                     float(report["latency"]["batch64Ms"])))
                native_runs.append((
                    native_decode_ms(folder / "decoder.onnx", vae.latent_dim, 1, 10, 200),
                    native_decode_ms(folder / "decoder.onnx", vae.latent_dim, 64, 3, 30)))
            row = {
                "browser_batch1_ms": statistics.median(r[0] for r in browser_runs),
                "browser_batch64_ms": statistics.median(r[1] for r in browser_runs),
                "native_batch1_ms": statistics.median(r[0] for r in native_runs),
                "native_batch64_ms": statistics.median(r[1] for r in native_runs),
                "self_check_max_abs_diff": float(report["selfcheck"]["maxAbsDiff"]),
                "ort_web": report["ort_web"], "rounds": browser_runs,
                "native_rounds": native_runs,
            }
            row["ratio_batch1"] = row["browser_batch1_ms"] / row["native_batch1_ms"]
            row["ratio_batch64"] = row["browser_batch64_ms"] / row["native_batch64_ms"]
            results["models"][name] = row
            print(f"{name}: browser {row['browser_batch1_ms']:.3f} ms (batch 1), "
                  f"{row['browser_batch64_ms']:.2f} ms (batch 64); onnxruntime 1 thread "
                  f"{row['native_batch1_ms']:.3f} / {row['native_batch64_ms']:.2f} ms; ratios "
                  f"{row['ratio_batch1']:.2f} / {row['ratio_batch64']:.2f}; self-check "
                  f"{row['self_check_max_abs_diff']:.1e}", flush=True)
    out = Path(args.results)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp_out, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
