"""`VAEDetector`: an unsupervised anomaly detector for tables with the scikit-learn / PyOD shape.

    import keras_vae as kv
    detector = kv.VAEDetector(contamination=0.05).fit(x_train)   # raw rows (n, D), no scaling
    scores = detector.decision_function(x_new)    # higher = more anomalous (nats, see below)
    flags = detector.predict(x_new)               # 0/1, 1 where score > detector.threshold_
    detector.save("detector")                     # a folder; VAEDetector.load("detector")

It fits `n_models` VAEs (different seeds) whose encoder starts with a `scaling.Standardize`
layer and whose decoder ends with `scaling.ToDataUnits`, so they take raw rows and their
likelihood p(x|z) is the density of the raw row (`keras_vae.likelihoods`; heavy-tailed
Student-t by default, each feature's scale floored at `min_scale` = 0.3 of its robust scale).
Sizes follow the data: latent K = max(2, min(16, D // 2)), hidden
layers (h, h // 2) with h = min(256, max(32, 4 D)), batch size n / 32 within [32, 512].
Training holds out `validation_fraction` of the rows and stops early on their -ELBO
(checked every `check_every` gradient steps, restoring the best check), within `max_steps`
gradient steps, `max_epochs` passes and `max_seconds`; the defaults (2000 steps, a check every
200, 20 steps per compiled call, no XLA, min_scale 0.3) were chosen on the twelve shared
tables of benchmarks/anomaly_tabular.py (benchmarks/README.md): 2000 steps gave the AUROC of
3000 in 22 % less time, 1200 lost 0.005.

The score of a row is -ELBO(x) ("elbo") or the importance-weighted -ln p(x) ("iwae") with
`num_samples` posterior draws, averaged over the models, in nats of the raw data's units
(a density of the raw row: rescaling a column shifts every score by the same constant).
`threshold_` is the (1 - contamination) quantile of the training rows' scores, as in PyOD, so
`predict` flags a fraction `contamination` of the training data.
"""

import json
import math
import os
import shutil
import tempfile
import time

import numpy as np

import keras
from keras import ops

from keras_vae import distributions, likelihoods, scaling
from keras_vae.model import VAE

SCORES = ("elbo", "iwae")
#: The default likelihood of p(x|z) for table rows.
DEFAULT_LIKELIHOOD = "student_t"
#: The default floor of each feature's scale in p(x|z), as a fraction of its robust scale
#: (chosen on benchmarks/anomaly_tabular.py, see benchmarks/README.md).
MIN_SCALE = 0.3
DETECTOR_FILE = "detector.json"
#: Rows per batch of `score_rows`; the posterior draws are made batch by batch.
SCORE_BATCH_SIZE = 2048


def model_file(index):
    """The file name of the detector's model `index`: model.keras, model-1.keras, ..."""
    return "model.keras" if index == 0 else f"model-{index}.keras"


def default_sizes(num_features, num_rows):
    """(latent_dim, hidden_units, batch_size) the detector uses for data (num_rows, num_features)."""
    d, n = int(num_features), int(num_rows)
    latent = max(2, min(16, d // 2))
    h = min(256, max(32, 4 * d))
    batch = int(min(512, max(32, n // 32)))
    return latent, (h, max(16, h // 2)), batch


class _TimeLimit(keras.callbacks.Callback):
    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if self.seconds is not None and time.perf_counter() - self.start > self.seconds:
            self.model.stop_training = True


def _check_x(x, num_features=None, what="X"):
    x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(f"{what} must be numeric, got dtype {x.dtype}; read tables with "
                         "keras_vae.datasets.tabular.read_table, which names bad columns.")
    if x.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array (rows, features), got shape {x.shape}.")
    if len(x) == 0:
        raise ValueError(f"{what} has no rows.")
    if num_features is not None and x.shape[1] != num_features:
        raise ValueError(f"{what} has {x.shape[1]} columns but the detector was fitted on "
                         f"{num_features}.")
    finite = np.isfinite(x)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise ValueError(f"{what} has a missing or infinite value in column {col}, row {row} "
                         f"({int((~finite).sum())} in all); impute it first.")
    return x.astype("float32")


def score_rows(vae, x, method="elbo", num_samples=16, seed=0, batch_size=SCORE_BATCH_SIZE):
    """Anomaly scores (n,) float64 of raw rows: -ELBO or importance-weighted -ln p(x), nats.

    Eager `keras.ops` over batches, with the noise drawn by NumPy from `seed`: the same
    numbers on every backend and every call, and no compilation for a one-off scoring.
    """
    if method not in SCORES:
        raise ValueError(f"Unknown score {method!r}: expected one of {SCORES}.")
    rng = np.random.default_rng(seed)
    out = np.empty(len(x))
    s = int(num_samples)
    for start in range(0, len(x), batch_size):
        xb = ops.convert_to_tensor(x[start:start + batch_size], "float32")
        b = int(xb.shape[0])
        z_mean, z_log_var = vae.encoder(xb, training=False)
        z_mean, z_log_var = ops.cast(z_mean, "float32"), ops.cast(z_log_var, "float32")
        eps = ops.convert_to_tensor(rng.standard_normal((s, b, vae.latent_dim)), "float32")
        z = z_mean + ops.exp(0.5 * z_log_var) * eps                     # (S, B, K)
        params = vae.decoder(ops.reshape(z, (-1, vae.latent_dim)), training=False)
        params = ops.reshape(ops.cast(params, "float32"), (s, b) + vae.params_shape)
        log_lik = vae.log_likelihood_given(xb, params)                   # (S, B)
        if method == "elbo":
            value = ops.mean(log_lik, axis=0) - vae.kl(z_mean, z_log_var)
        else:
            log_q = (distributions.standard_normal_log_density(eps)
                     - 0.5 * ops.sum(z_log_var, axis=-1))
            log_w = log_lik + distributions.standard_normal_log_density(z) - log_q
            value = ops.logsumexp(log_w, axis=0) - math.log(s)
        out[start:start + b] = -np.asarray(ops.convert_to_numpy(value), dtype="float64")
    return out


class VAEDetector:
    """Unsupervised anomaly detector on raw table rows (see the module docstring).

    Args:
        contamination: expected fraction of anomalies in the training data, in (0, 0.5]:
            sets `threshold_`.
        likelihood: "student_t" (default), "gaussian_hetero" or "laplace".
        latent_dim, hidden_units, batch_size: None for `default_sizes`.
        max_epochs: most passes over the training rows.
        max_steps: most gradient steps (None: no bound beyond max_epochs).
        check_every: gradient steps between checks of the held-out rows' -ELBO (each check
            is one Keras epoch of several passes); None: after every pass.
        patience: early stopping after this many checks without a better held-out -ELBO
            (the best check's weights are kept).
        max_seconds: stop each model's training after the check that passes this time.
        steps_per_execution: training steps per compiled call (Keras `compile`).
        min_scale: the smallest scale p(x|z) may give a feature, as a fraction of the
            feature's robust scale (`scaling.ToDataUnits`): a floor on how sharply one
            feature can count in the score.
        validation_fraction: share of the training rows held out for early stopping.
        lr: Adam learning rate.
        score: "elbo" or "iwae", with `num_samples` posterior draws per row.
        n_models: VAEs with different seeds whose scores are averaged.
        seed: seed of the split, the weights and the scoring noise.
        verbose: Keras verbosity while training.

    Attributes after `fit`: `models_` (the VAEs), `threshold_`, `decision_scores_` and
    `labels_` (of the training rows), `n_features_in_`, `history_` (per model).
    """

    def __init__(self, contamination=0.1, likelihood=DEFAULT_LIKELIHOOD, latent_dim=None,
                 hidden_units=None, batch_size=None, max_epochs=300, patience=5,
                 max_seconds=60.0, validation_fraction=0.1, lr=1e-3, score="elbo",
                 num_samples=16, n_models=1, seed=0, verbose=0, max_steps=2000,
                 check_every=200, steps_per_execution=20, min_scale=MIN_SCALE):
        if not 0.0 < float(contamination) <= 0.5:
            raise ValueError(f"contamination must be in (0, 0.5], got {contamination!r}.")
        if likelihood not in likelihoods.TWO_PARAMETER:
            raise ValueError(f"likelihood must be one of {likelihoods.TWO_PARAMETER}, got "
                             f"{likelihood!r}.")
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}.")
        if not 0.0 <= float(validation_fraction) < 0.5:
            raise ValueError("validation_fraction must be in [0, 0.5), got "
                             f"{validation_fraction!r}.")
        for name, value in (("n_models", n_models), ("max_epochs", max_epochs),
                            ("patience", patience), ("num_samples", num_samples),
                            ("max_steps", max_steps or 1), ("check_every", check_every or 1),
                            ("steps_per_execution", steps_per_execution)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        self.contamination = float(contamination)
        self.likelihood = likelihood
        self.latent_dim = latent_dim
        self.hidden_units = None if hidden_units is None else tuple(hidden_units)
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.max_seconds = max_seconds
        self.validation_fraction = float(validation_fraction)
        self.lr = float(lr)
        self.score = score
        self.num_samples = num_samples
        self.n_models = n_models
        self.seed = int(seed)
        self.verbose = verbose
        self.max_steps = max_steps
        self.check_every = check_every
        self.steps_per_execution = steps_per_execution
        if not 0.0 < float(min_scale) <= 10.0:
            raise ValueError(f"min_scale must be in (0, 10], got {min_scale!r}.")
        self.min_scale = float(min_scale)
        self.models_ = None
        self.threshold_ = None

    # ------------------------------------------------------------------ fitting
    def get_params(self):
        """The constructor arguments (dict), as scikit-learn's `get_params`."""
        return {k: getattr(self, k) for k in (
            "contamination", "likelihood", "latent_dim", "hidden_units", "batch_size",
            "max_epochs", "patience", "max_seconds", "validation_fraction", "lr", "score",
            "num_samples", "n_models", "seed", "verbose", "max_steps", "check_every",
            "steps_per_execution", "min_scale")}

    def _build(self, num_features, num_rows, loc, scale, seed):
        latent, hidden, _ = default_sizes(num_features, num_rows)
        latent = self.latent_dim or latent
        hidden = self.hidden_units or hidden
        encoder, decoder = scaling.tabular_networks(num_features, latent, hidden, loc=loc,
                                                    scale=scale, min_scale=self.min_scale)
        vae = VAE(encoder, decoder, likelihood=self.likelihood, seed=seed)
        jit = False if keras.backend.backend() == "tensorflow" else "auto"
        vae.compile(optimizer=keras.optimizers.Adam(self.lr), jit_compile=jit,
                    steps_per_execution=self.steps_per_execution)
        return vae

    def fit(self, X, y=None):
        """Fits the models on raw rows X (n, D) (y is ignored: unsupervised); returns self."""
        x = _check_x(X)
        n, d = x.shape
        if n < 8:
            raise ValueError(f"X has {n} rows; the detector needs at least 8.")
        loc, scale = scaling.robust_statistics(x)
        _, _, batch = default_sizes(d, n)
        batch = int(self.batch_size or batch)
        self.models_, self.history_ = [], []
        for m in range(self.n_models):
            seed = self.seed + 1000 * m
            keras.utils.set_random_seed(seed)
            order = np.random.default_rng(seed).permutation(n)
            n_valid = int(round(self.validation_fraction * n))
            valid, train = x[order[:n_valid]], x[order[n_valid:]]
            vae = self._build(d, n, loc, scale, seed)
            epochs, passes, patience = self._schedule(len(train), batch)
            if passes > 1:  # one Keras epoch = `passes` shuffled passes over the rows
                train = np.tile(train, (passes, 1))
            callbacks = [_TimeLimit(self.max_seconds)]
            kwargs = {}
            if n_valid >= 2:
                callbacks.append(keras.callbacks.EarlyStopping(
                    monitor="val_neg_elbo", mode="min", patience=patience,
                    restore_best_weights=True))
                kwargs["validation_data"] = valid
            history = vae.fit(train, epochs=epochs, batch_size=batch, shuffle=True,
                              callbacks=callbacks, verbose=self.verbose, **kwargs)
            self.models_.append(vae)
            self.history_.append({k: [float(v) for v in vals]
                                  for k, vals in history.history.items()})
        self.n_features_in_ = d
        self.decision_scores_ = self.decision_function(x)
        self.threshold_ = float(np.quantile(self.decision_scores_, 1.0 - self.contamination))
        self.labels_ = (self.decision_scores_ > self.threshold_).astype("int64")
        return self

    def _schedule(self, num_train, batch):
        """(Keras epochs, passes over the rows per Keras epoch, early-stopping patience in
        Keras epochs). Without `check_every` an epoch is one pass (max_epochs, patience as
        given); with it, an epoch holds enough passes for about `check_every` gradient steps,
        so the held-out check and the per-epoch overhead come every `check_every` steps, and
        `patience` counts checks. `max_steps` bounds the gradient steps."""
        steps_per_pass = max(1, math.ceil(num_train / batch))
        max_passes = self.max_epochs
        if self.max_steps:
            max_passes = min(max_passes, max(1, math.ceil(self.max_steps / steps_per_pass)))
        if not self.check_every:
            return max_passes, 1, self.patience
        passes = max(1, min(max_passes, round(self.check_every / steps_per_pass)))
        return max(1, math.ceil(max_passes / passes)), passes, self.patience

    # ------------------------------------------------------------------ scoring
    def _check_fitted(self):
        if not self.models_:
            raise ValueError("This VAEDetector is not fitted yet: call fit(X) first.")

    def decision_function(self, X):
        """Anomaly scores (n,) float64 of raw rows, higher = more anomalous (nats)."""
        self._check_fitted()
        x = _check_x(X, self.n_features_in_ if hasattr(self, "n_features_in_") else None)
        scores = [score_rows(vae, x, self.score, self.num_samples, seed=self.seed)
                  for vae in self.models_]
        return np.mean(scores, axis=0)

    def predict(self, X):
        """0/1 labels (n,) int64: 1 where the score is above `threshold_`."""
        self._check_fitted()
        return (self.decision_function(X) > self.threshold_).astype("int64")

    def set_contamination(self, contamination):
        """Refits `threshold_` (and `labels_`) for another contamination rate, no retraining."""
        self._check_fitted()
        if not 0.0 < float(contamination) <= 0.5:
            raise ValueError(f"contamination must be in (0, 0.5], got {contamination!r}.")
        self.contamination = float(contamination)
        self.threshold_ = float(np.quantile(self.decision_scores_, 1.0 - self.contamination))
        self.labels_ = (self.decision_scores_ > self.threshold_).astype("int64")
        return self

    # ------------------------------------------------------------------ files
    def save(self, path, overwrite=False):
        """Writes the detector to the folder `path`: detector.json (parameters,
        `anomaly_threshold`, training scores) and model.keras (model-<i>.keras for more
        models). Atomic: written
        beside `path` and renamed into place; an existing folder is replaced only with
        `overwrite`."""
        self._check_fitted()
        path = os.fspath(path)
        if os.path.exists(path) and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
        parent = os.path.dirname(os.path.abspath(path))
        tmp = tempfile.mkdtemp(prefix=".detector-", dir=parent)
        try:
            self.save_into(tmp)
            if os.path.exists(path):
                old = tmp + ".old"
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return path

    def save_into(self, folder):
        """Writes detector.json and the model files into an existing `folder` (each file
        atomically); what `save` and the `keras-vae train` command of a table use."""
        for i, vae in enumerate(self.models_):
            target = os.path.join(folder, model_file(i))
            vae.save(target + ".tmp.keras")
            os.replace(target + ".tmp.keras", target)
        state = {"params": {**self.get_params(), "hidden_units": (
                     None if self.hidden_units is None else list(self.hidden_units))},
                 "anomaly_threshold": self.threshold_, "n_features_in": self.n_features_in_,
                 "num_models": len(self.models_),
                 "decision_scores": [float(v) for v in self.decision_scores_]}
        target = os.path.join(folder, DETECTOR_FILE)
        with open(target + ".tmp", "w") as handle:
            json.dump(state, handle, indent=1)
        os.replace(target + ".tmp", target)

    @classmethod
    def load(cls, path):
        """A detector written by `save` (or a run folder holding detector.json)."""
        path = os.fspath(path)
        state_path = os.path.join(path, DETECTOR_FILE)
        if not os.path.exists(state_path):
            raise FileNotFoundError(f"{path} holds no saved detector (no {DETECTOR_FILE}).")
        with open(state_path) as handle:
            state = json.load(handle)
        detector = cls(**state["params"])
        detector.models_ = [keras.saving.load_model(os.path.join(path, model_file(i)))
                            for i in range(state["num_models"])]
        detector.threshold_ = float(state["anomaly_threshold"])
        detector.n_features_in_ = int(state["n_features_in"])
        detector.decision_scores_ = np.asarray(state["decision_scores"], dtype="float64")
        detector.labels_ = (detector.decision_scores_ > detector.threshold_).astype("int64")
        return detector
