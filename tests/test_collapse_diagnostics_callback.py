"""CollapseDiagnostics: at each epoch's end the posterior-collapse numbers of a fixed sample go
into the logs (History) and a TensorBoard event file, and they are the numbers
`collapse_report` gives for the model of that epoch."""

import math

import keras
import numpy as np
import pytest
from conftest import tiny_vae

from keras_vae import evaluation
from keras_vae.callbacks import CollapseDiagnostics


def read_events(log_dir):
    """{tag: {step: value}} of every summary in the event files under log_dir; histograms as
    their bucket array."""
    import tensorflow as tf

    out = {}
    files = sorted(log_dir.glob("events.out.tfevents.*"))
    assert files, f"no event file in {log_dir}"
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                out.setdefault(value.tag, {})[event.step] = tf.make_ndarray(value.tensor)
    return out


class Snapshot(keras.callbacks.Callback):
    """Keeps the report of the model as it is at each epoch's end (independent recomputation)."""

    def __init__(self, x):
        super().__init__()
        self.x, self.reports = x, {}

    def on_epoch_end(self, epoch, logs=None):
        self.reports[epoch] = evaluation.collapse_report(self.model, self.x, seed=7)


@pytest.fixture(scope="module")
def trained(binary_digits, tmp_path_factory):
    train, test = binary_digits
    keras.utils.set_random_seed(0)
    vae = tiny_vae(latent_dim=4)
    vae.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
    log_dir = tmp_path_factory.mktemp("tb") / "collapse"
    sample = test[:200]
    callback = CollapseDiagnostics(sample, log_dir, seed=7)
    snapshot = Snapshot(sample)
    history = vae.fit(train[:600], epochs=3, batch_size=100, verbose=0,
                      callbacks=[callback, snapshot])
    return vae, callback, snapshot, history.history, log_dir


def test_logs_hold_the_report_of_each_epoch(trained):
    _, callback, snapshot, history, _ = trained
    assert sorted(callback.reports) == [0, 1, 2]
    for epoch in range(3):
        expected = snapshot.reports[epoch]
        assert history["val_active_units"][epoch] == expected["active_units"]
        assert history["val_mutual_information"][epoch] == pytest.approx(
            expected["mutual_information"], rel=1e-6)
        assert callback.reports[epoch]["kl_per_dimension"] == pytest.approx(
            expected["kl_per_dimension"], rel=1e-6)
    # the numbers move with training (so the comparison above is not of constants)
    assert history["val_mutual_information"][0] != history["val_mutual_information"][2]
    assert 0.0 < history["val_mutual_information"][2] <= math.log(200)


def test_tensorboard_event_file_holds_the_values(trained):
    _, callback, _, history, log_dir = trained
    events = read_events(log_dir)
    assert sorted(events["collapse/active_units"]) == [0, 1, 2]
    for epoch in range(3):
        report = callback.reports[epoch]
        assert float(events["collapse/active_units"][epoch]) == history["val_active_units"][epoch]
        assert float(events["collapse/mutual_information"][epoch]) == pytest.approx(
            history["val_mutual_information"][epoch], rel=1e-6)
        assert float(events["collapse/kl_total"][epoch]) == pytest.approx(report["kl_total"],
                                                                          rel=1e-6)
        for j, value in enumerate(report["kl_per_dimension"]):
            assert float(events[f"collapse/kl_dim_{j:02d}"][epoch]) == pytest.approx(value,
                                                                                     rel=1e-6)
        # the histogram's buckets (left, right, count) hold the K values
        buckets = events["collapse/kl_per_dimension"][epoch]
        assert buckets[:, 2].sum() == pytest.approx(4)
        assert buckets[:, 0].min() == pytest.approx(min(report["kl_per_dimension"]), rel=1e-5)


def test_every_and_bad_arguments(binary_digits):
    _, test = binary_digits
    vae = tiny_vae(latent_dim=2)
    callback = CollapseDiagnostics(test[:50], every=2)
    callback.set_model(vae)
    logs = [{} for _ in range(4)]
    for epoch in range(4):
        callback.on_epoch_end(epoch, logs[epoch])
    assert sorted(callback.reports) == [1, 3]
    assert [sorted(entry) for entry in logs] == [
        [], ["val_active_units", "val_mutual_information"]] * 2
    assert logs[3]["val_mutual_information"] == evaluation.mutual_information(vae, test[:50])
    with pytest.raises(ValueError, match="at least 2 examples"):
        CollapseDiagnostics(test[:1])
    with pytest.raises(ValueError, match="every must be an integer >= 1"):
        CollapseDiagnostics(test[:10], every=0)
