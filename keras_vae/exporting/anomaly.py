"""The anomaly-detection part of an export: the threshold of a table detector and how its score
is computed, written to `manifest.json["anomaly"]` so the TF-free runtime's `score` gives the
same scores and flags as `keras-vae score` (`keras_vae.training.tabular`).

The section is written when the exported model comes from a `keras_vae.VAEDetector` or from a
run directory holding `detector.json`:

    "anomaly": {
      "threshold": 41.2,            # flag = 1 where score > threshold (None: see "note")
      "contamination": 0.05,        # share of the training rows above the threshold
      "score": "elbo",              # or "iwae"
      "num_samples": 16, "seed": 0, "batch_size": 2048,
      "noise": "...",               # how the posterior draws are made (reproducible)
      "training_scores": {"count": n, "from_index": k, "sorted": [...]},
      "table": {"columns": [...], "label_column": ..., "header": ..., "impute": ...}
    }                               # "table": run directories of `keras-vae train` only

`training_scores` holds the training rows' scores from the median up (sorted), which is all a
quantile at 1 - contamination (contamination <= 0.5) reads, so `--contamination` can refit the
threshold outside Python exactly as `VAEDetector.set_contamination` does.
"""

import json
import math
from pathlib import Path

import numpy as np

from keras_vae.detector import DETECTOR_FILE, SCORE_BATCH_SIZE, VAEDetector

NOISE = ("eps = numpy.random.default_rng(seed).standard_normal((num_samples, b, K)), drawn "
         "for each batch of batch_size rows in order (b rows in the batch); z = z_mean + "
         "exp(z_log_var / 2) * eps")
FORMULAS = {
    "elbo": "score = -(mean_s ln p(x|z_s) - KL(q(z|x) || N(0, I))): the Monte Carlo -ELBO, nats",
    "iwae": "score = -(logsumexp_s [ln p(x|z_s) + ln N(z_s; 0, I) - ln q(z_s|x)] - "
            "ln num_samples): the importance-weighted -ln p(x), nats",
}


def upper_scores(scores):
    """{"count", "from_index", "sorted"}: the sorted scores from index floor((n - 1) / 2) on,
    enough for numpy.quantile(scores, q) with q >= 0.5 (linear interpolation)."""
    ordered = np.sort(np.asarray(scores, dtype="float64"))
    start = int(math.floor((len(ordered) - 1) * 0.5))
    return {"count": int(len(ordered)), "from_index": start,
            "sorted": [float(v) for v in ordered[start:]]}


def section(params, threshold, scores, num_models, contamination):
    """The manifest section from a detector's parameters, threshold and training scores."""
    out = {"score": params.get("score", "elbo"), "formula": None,
           "num_samples": int(params.get("num_samples", 16)),
           "seed": int(params.get("seed", 0)), "batch_size": SCORE_BATCH_SIZE, "noise": NOISE,
           "contamination": float(contamination), "flag_rule": "flag = 1 where score > threshold",
           "num_models": int(num_models)}
    out["formula"] = FORMULAS[out["score"]]
    if num_models > 1:
        out.update(threshold=None, training_scores=None, note=(
            f"the detector averages the scores of {num_models} models and this bundle holds "
            "the first one, so its threshold does not apply here; pass --threshold to flag "
            "rows"))
    else:
        out.update(threshold=None if threshold is None else float(threshold),
                   training_scores=None if scores is None else upper_scores(scores))
    return out


def from_detector(detector):
    """The section for a fitted `VAEDetector`."""
    if not detector.models_:
        raise ValueError("This VAEDetector is not fitted yet: call fit(X) before exporting it.")
    return section(detector.get_params(), detector.threshold_, detector.decision_scores_,
                   len(detector.models_), detector.contamination)


def from_run(run_dir):
    """The section for a run directory holding detector.json (None without one), with the
    table reader's options from its config.json."""
    run_dir = Path(run_dir)
    path = run_dir / DETECTOR_FILE
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    params = state.get("params", {})
    out = section(params, state.get("anomaly_threshold"), state.get("decision_scores"),
                  state.get("num_models", 1), params.get("contamination", 0.1))
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    if isinstance(config, dict) and config.get("kind") == "table":
        out["table"] = {k: config.get(k) for k in ("columns", "label_column", "header",
                                                    "impute")}
    return out


def unwrap(model):
    """(vae, section or None): a `VAEDetector` exports its first model with its section."""
    if isinstance(model, VAEDetector):
        section_ = from_detector(model)
        return model.models_[0], section_
    return model, None
