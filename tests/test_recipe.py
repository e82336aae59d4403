"""The Recipe: one spelling per option, config.json as a serialized recipe, run directories
written before the recipe existed still load and resume, zoo entries as recipes, and the
same recipe trained by `keras-vae train` and by `keras-vae zoo build` gives the same weights
(one training path)."""

import json

import numpy as np
import pytest

from keras_vae import cli, training, zoo
from keras_vae.training import Recipe
from keras_vae.zoo.recipes import recipe_from_entry

# config.json as `keras-vae train --epochs 1 --hidden-units 16 --early-stopping 3` wrote it
# before the Recipe (keras-vae 0.1.0, commit e875ebb): `lr`, `early_stopping`, no EMA/schedule.
OLD_CONFIG = {
    "batch_size": 100, "beta": 1.0, "binarize": None, "data_dir": None, "dataset": "digits",
    "early_stopping": 3, "epochs": 1, "hidden_units": [16], "image_shape": [8, 8, 1],
    "input_shape": [64], "keras_vae_version": "0.1.0", "kl_warmup": 0, "latent_dim": 2,
    "likelihood": "bernoulli", "lr": 0.001, "mixed_precision": None, "model": "kingma-welling",
    "num_samples": 1, "objective": "elbo", "posterior": "diagonal", "scale": "auto", "seed": 0,
    "strategy": "default",
}


def test_recipe_round_trips_and_reads_other_spellings():
    recipe = Recipe(dataset="digits", model="mlp", hidden_units=[8, 4], learning_rate=3e-3,
                    patience=5, ema_momentum=0.99, reduce_lr_patience=2)
    assert Recipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe
    old = Recipe.from_dict({"lr": 0.01, "early_stopping": 4, "max_epochs": 7,
                            "kl_warmup_epochs": 2, "model": "kingma_welling",
                            "keras_vae_version": "0.1.0"})
    assert (old.learning_rate, old.patience, old.epochs, old.kl_warmup, old.model) == \
        (0.01, 4, 7, 2, "kingma-welling")
    assert recipe.replace(lr=0.5).learning_rate == 0.5
    config = training.make_config("digits", model="kingma_welling", lr=0.02, early_stopping=3)
    assert config["model"] == "kingma-welling" and config["learning_rate"] == 0.02
    assert config["patience"] == 3 and "lr" not in config and "early_stopping" not in config


def test_recipe_options_are_checked_with_the_flag_named():
    for bad, flag in (({"ema_momentum": 1.5}, "--ema-momentum"),
                      ({"reduce_lr_patience": 0}, "--reduce-lr-patience"),
                      ({"time_limit": -1.0}, "--time-limit"),
                      ({"binarize": "half"}, "--binarize")):
        with pytest.raises(ValueError, match=flag):
            training.make_config("digits", **bad)


def test_an_old_run_directory_loads_and_resumes(tmp_path):
    """A run whose config.json has the old spelling: the same options today are the same run
    (it resumes, not "other options"), it trains to the end, and `load_run` reads its
    config in today's spelling."""
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(OLD_CONFIG))
    today = training.make_config("digits", epochs=1, hidden_units=[16], early_stopping=3)
    assert training.prepare_run_dir(str(run_dir), today) == "resume"
    with pytest.raises(FileExistsError, match="learning_rate: 0.001 -> 0.002"):
        training.prepare_run_dir(str(run_dir), {**today, "learning_rate": 0.002})
    summary = training.train(today, str(run_dir), verbose=0)
    assert summary["epochs_trained"] == 1 and summary["stopped_by"] == "max_epochs"
    _, config = training.load_run(str(run_dir))
    assert config["learning_rate"] == 0.001 and config["patience"] == 3
    assert config["ema_momentum"] is None and config["keras_vae_version"] == "0.1.0"


def test_zoo_entries_are_recipes():
    kw = recipe_from_entry(zoo.REGISTRY["kw_digits_z2"])
    assert (kw.model, kw.hidden_units, kw.latent_dim, kw.dataset, kw.binarize) == \
        ("kingma-welling", [200], 2, "digits", "threshold")
    assert (kw.learning_rate, kw.batch_size, kw.epochs, kw.patience, kw.deterministic) == \
        (1e-3, 50, 400, 30, True)
    conv = recipe_from_entry(zoo.REGISTRY["conv_digits_z4"])
    assert conv.hidden_units == [16, 32] and conv.model_options == {"dense_units": 64}
    assert conv.input_shape == [8, 8, 1]
    iwae = recipe_from_entry(zoo.REGISTRY["iwae_mnist_z50"], resolve_data=False)
    assert (iwae.objective, iwae.num_samples, iwae.ema_momentum, iwae.reduce_lr_patience) == \
        ("iwae", 50, 0.999, 5)
    assert iwae.model_options == {"activation": "tanh"}
    pixel = recipe_from_entry(zoo.REGISTRY["pixelcnn_mnist_z32"], resolve_data=False)
    assert pixel.kl_warmup == 10 and pixel.model == "pixel-cnn"


@pytest.mark.large
def test_train_command_and_zoo_build_give_the_same_weights(tmp_path, monkeypatch):
    """A digits recipe (seeded, deterministic ops) trained for 2 epochs by `keras-vae zoo build`
    and by `keras-vae train` with the flags that spell the same recipe: the same weights, bit
    for bit, since both go through `training.train`; and the same test split is measured."""
    entry = dict(zoo.REGISTRY["kw_digits_z2"], file="same_path.weights.h5", sha256=None,
                 config={"input_dim": 64, "latent_dim": 2, "hidden_units": 32})
    monkeypatch.setitem(zoo.REGISTRY, "same_path", entry)
    built = zoo.build("same_path", out=tmp_path, max_epochs=2, nll_samples=0, verbose=0,
                      run_dir=tmp_path / "zoo_run")
    assert built["training"]["epochs"] == 2
    from_zoo = zoo.loader.construct(entry)
    from_zoo.load_weights(str(tmp_path / "same_path.weights.h5"))

    run_dir = tmp_path / "train_run"
    assert cli.main(["train", "--dataset", "digits", "--model", "kingma-welling",
                     "--latent-dim", "2", "--hidden-units", "32", "--binarize", "threshold",
                     "--batch-size", "50", "--epochs", "2", "--lr", "0.001",
                     "--early-stopping", "30", "--seed", "0", "--deterministic",
                     "--run-dir", str(run_dir)]) == 0
    from_train, config = training.load_run(str(run_dir))
    zoo_config = json.loads((tmp_path / "zoo_run" / "config.json").read_text())
    options = training.RUN_OPTIONS
    assert {k: config[k] for k in options} == {k: zoo_config[k] for k in options}
    for a, b in zip(from_zoo.get_weights(), from_train.get_weights()):
        np.testing.assert_array_equal(a, b)
    x_test = training.load_split(config, "test", numpy=True)[0]
    assert built["results"]["test_examples"] == len(x_test) == 180
    np.testing.assert_array_equal(x_test, zoo.load_data("digits")[2])
