"""Measuring an exported artifact against the Keras model."""

import numpy as np

from keras_vae.exporting import formats
from keras_vae.exporting.formats import (
    PARITY_BATCH_SIZES,
    PRECISION,
    ExportError,
    artifact_path,
)
from keras_vae.exporting.inputs import num_rows, take


# --------------------------------------------------------------------------- measuring
def _differences(run, reference, inputs):
    """Per-output max/mean |run - reference| and the scale max(1, max |reference|)."""
    got, want = run(inputs), reference
    if set(got) != set(want):
        raise ExportError(f"outputs {sorted(got)} differ from the expected {sorted(want)}")
    stats = {}
    for name, expected in want.items():
        value = np.asarray(got[name], dtype="float64")
        if value.shape != expected.shape:
            raise ExportError(f"output {name!r} has shape {value.shape}, Keras gives "
                              f"{expected.shape}")
        diff = np.abs(value - expected.astype("float64"))
        scale = max(1.0, float(np.max(np.abs(expected))))
        stats[name] = {"max_abs_diff": float(np.max(diff)), "mean_abs_diff": float(np.mean(diff)),
                       "scale": scale}
    return stats


def measure(graphs, component, fmt, run, eval_inputs, data_given=False):
    """Runs an artifact at each parity batch size (and, for variants with a budget on the mean,
    on every eval input), compares with Keras and checks the budget."""
    budget = formats.ERROR_BUDGETS[fmt]  # read at call time: tests may replace the table
    runs = {f"batch_{n}": take(eval_inputs, n) for n in PARITY_BATCH_SIZES}
    if budget["mean"] is not None and num_rows(eval_inputs) > max(PARITY_BATCH_SIZES):
        runs[f"batch_{num_rows(eval_inputs)}"] = eval_inputs
    measured = {key: _differences(run, graphs.reference(component, x), x)
                for key, x in runs.items()}
    worst_max = max(s["max_abs_diff"] / s["scale"] for r in measured.values() for s in r.values())
    worst_mean = max(s["mean_abs_diff"] / s["scale"] for r in measured.values()
                     for s in r.values())
    result = {
        "max_abs_diff": max(s["max_abs_diff"] for r in measured.values() for s in r.values()),
        "mean_abs_diff": max(s["mean_abs_diff"] for r in measured.values() for s in r.values()),
        "scaled_max_abs_diff": worst_max,
        "scaled_mean_abs_diff": worst_mean,
        "budget": budget,
        "by_batch": measured,
    }
    over = []
    if worst_max > budget["max"]:
        over.append(f"max |diff| = {worst_max:.3g} > {budget['max']:g}")
    if budget["mean"] is not None and worst_mean > budget["mean"]:
        over.append(f"mean |diff| = {worst_mean:.3g} > {budget['mean']:g}")
    if over:
        worst = {f"{key}/{name}": round(s["max_abs_diff"], 8) for key, r in measured.items()
                 for name, s in r.items()}
        error = ExportError(
            f"{artifact_path(fmt, component)} does not match the Keras {component}: "
            f"{'; '.join(over)} (in units of max(1, max |output|)). Unscaled max |diff| per "
            f"output: {worst}. "
            + ("This fp32 artifact should match to float precision; please report it."
               if PRECISION[fmt] == "fp32" else
               f"The {fmt} variant is too lossy for this model even when calibrated on the "
               "given data; leave it out of formats (fp16 keeps far more precision)."
               if data_given else
               f"The {fmt} variant is too lossy for this model; pass data=/--data with "
               "representative inputs for calibration, or leave it out of formats."), fmt=fmt)
        error.measured = {**result, "over_budget": "; ".join(over)}
        raise error
    return result
