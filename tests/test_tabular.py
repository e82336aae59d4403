"""Tables and image folders in `keras_vae.datasets`, the location-scale likelihoods against
scipy.stats, and the scaling layers: raw rows in, the raw row's density out, saved in .keras."""

import math

import keras
import numpy as np
import pytest
from scipy import stats

from keras_vae import datasets, likelihoods, scaling
from keras_vae.datasets import images, tabular
from keras_vae.detector import score_rows
from keras_vae.model import VAE


def write(path, text):
    path.write_text(text)
    return str(path)


# ----------------------------------------------------------------------------- readers
def test_csv_header_detected_and_label_kept_out(tmp_path):
    path = write(tmp_path / "t.csv", "a,b,label,c\n1,2.5,0,-3\n4,5e1,1,6\n7,8,0,9.25\n")
    table = tabular.read_table(path, label_column="label")
    assert table.columns == ["a", "b", "c"] and table.label_column == "label"
    np.testing.assert_array_equal(table.x, [[1, 2.5, -3], [4, 50, 6], [7, 8, 9.25]])
    np.testing.assert_array_equal(table.y, [0, 1, 0])
    # columns by name and by index, in the order given
    assert tabular.read_table(path, columns="c,a").x[:, 0].tolist() == [-3, 6, 9.25]
    assert tabular.read_table(path, columns=[1]).x[:, 0].tolist() == [2.5, 50, 8]


def test_csv_without_header_and_tsv(tmp_path):
    table = tabular.read_table(write(tmp_path / "n.csv", "1,2\n3,4\n5,7\n"))
    assert table.columns == ["0", "1"] and table.x.tolist() == [[1, 2], [3, 4], [5, 7]]
    tsv = tabular.read_table(write(tmp_path / "t.tsv", "x\ty\n1\t2\n3\t5\n"))
    assert tsv.columns == ["x", "y"] and tsv.x.tolist() == [[1, 2], [3, 5]]
    semi = tabular.read_table(write(tmp_path / "s.csv", "x;y\n1;2\n3;5\n"))
    assert semi.x.tolist() == [[1, 2], [3, 5]]


@pytest.mark.parametrize("text, expected", [
    ("a,b\n1,2\n3,red\n4,5\n", r"column 'b', row 2 holds 'red', not a number"),
    ("a,b\n1,2\n3,\n4,5\n", r"column 'b', row 2 is missing \(1 missing"),
    ("a,b\n1,2\n3,9\n4,2\n".replace("3,9", "3,9,1"), r"row 2 has 3 fields but the header has 2"),
    ("a,b\n1,2\n3,2\n4,2\n", r"column 'b' is constant \(2 in every row\)"),
    ("a,b\n1,2\n3,inf\n4,2\n", r"column 'b', row 2 is infinite"),
])
def test_csv_errors_name_column_and_row(tmp_path, text, expected):
    with pytest.raises(ValueError, match=expected) as info:
        tabular.read_table(write(tmp_path / "bad.csv", text))
    assert "\n" not in str(info.value)


def test_unknown_column_and_label_in_features(tmp_path):
    path = write(tmp_path / "t.csv", "a,b,y\n1,2,0\n3,4,1\n")
    with pytest.raises(ValueError, match="no column named 'z'; the columns are 'a', 'b', 'y'"):
        tabular.read_table(path, columns="a,z")
    with pytest.raises(ValueError, match="label column 'y' is also listed"):
        tabular.read_table(path, columns="a,y", label_column="y")
    with pytest.raises(ValueError, match=r"label column 'b', row 1: '2.5' is not an integer"):
        tabular.read_table(write(tmp_path / "l.csv", "a,b\n1,2.5\n3,1\n"), label_column="b")


def test_impute_median_and_mean(tmp_path):
    path = write(tmp_path / "m.csv", "a,b\n1,10\nNA,20\n3,?\n5,60\n")
    assert tabular.read_table(path, impute="median").x.tolist() == [
        [1, 10], [3, 20], [3, 20], [5, 60]]
    assert tabular.read_table(path, impute="mean").x[2].tolist() == [3, 30]


def test_parquet_and_npz(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"u": [1.0, 2.0, None, 4.0], "v": [3, 1, 2, 0],
                             "label": [0, 0, 1, 0]}), str(tmp_path / "t.parquet"))
    table = tabular.read_table(str(tmp_path / "t.parquet"), label_column="label",
                               impute="median")
    assert table.columns == ["u", "v"] and table.x[:, 0].tolist() == [1, 2, 2, 4]
    assert table.y.tolist() == [0, 0, 1, 0]
    with pytest.raises(ValueError, match=r"column 'u', row 3 is missing"):
        tabular.read_table(str(tmp_path / "t.parquet"))
    pq.write_table(pa.table({"u": [1.0, 2.0], "s": ["x", "y"]}), str(tmp_path / "s.parquet"))
    with pytest.raises(ValueError, match=r"column 's', row 1 holds 'x', not a number"):
        tabular.read_table(str(tmp_path / "s.parquet"))
    np.savez(tmp_path / "a.npz", X=np.arange(12.0).reshape(4, 3) ** 2, y=np.array([0, 1, 0, 0]))
    table = tabular.read_table(str(tmp_path / "a.npz"))
    assert table.x.shape == (4, 3) and table.y.tolist() == [0, 1, 0, 0]
    assert tabular.is_table_path(str(tmp_path / "a.npz"))


def test_datasets_load_reads_tables_and_image_folders(tmp_path):
    rng = np.random.default_rng(0)
    rows = "\n".join(f"{a:.3f},{b:.3f},{int(a > 0)}" for a, b in rng.normal(size=(50, 2)))
    path = write(tmp_path / "d.csv", "p,q,label\n" + rows + "\n")
    assert datasets.describe_source(path) == ("table", path)
    x, y = datasets.load_numpy(path, "train", scale=None)
    assert x.shape == (40, 2) and y is not None and set(y.tolist()) <= {0, 1}
    assert np.all((x[:, 0] > 0) == (y == 1))  # the label column is the label, not a feature

    from PIL import Image
    for cls in ("cats", "dogs"):
        (tmp_path / "img" / cls).mkdir(parents=True)
        for i in range(6):
            value = 40 * i + (10 if cls == "dogs" else 0)
            Image.fromarray(np.full((5, 4), value, "uint8")).save(
                tmp_path / "img" / cls / f"{i}.png")
    folder = str(tmp_path / "img")
    x, labels, names = images.load_image_folder(folder)
    assert x.shape == (12, 5, 4, 1) and names == ["cats", "dogs"]
    assert labels.tolist() == [0] * 6 + [1] * 6
    np.testing.assert_allclose(x[7, 0, 0, 0], 50 / 255.0, atol=1e-6)
    small, _, _ = images.load_image_folder(folder, image_size=(2, 2), grayscale=False)
    assert small.shape == (12, 2, 2, 3)
    assert datasets.describe_source(folder) == ("images", folder)
    assert datasets.load_numpy(folder, "train")[0].shape == (10, 20)  # 80 % of 12, flattened


# ----------------------------------------------------------------------------- likelihoods
@pytest.mark.parametrize("kind, logpdf", [
    ("gaussian_hetero", lambda x, m, s: stats.norm.logpdf(x, m, s)),
    ("student_t", lambda x, m, s: stats.t.logpdf(x, likelihoods.STUDENT_T_DF, m, s)),
    ("laplace", lambda x, m, s: stats.laplace.logpdf(x, m, s)),
])
def test_location_scale_log_likelihoods_match_scipy(kind, logpdf):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 4, 5)) * 3
    loc, scale = rng.normal(size=(3, 4, 5)), np.exp(rng.normal(size=(3, 4, 5)))
    params = np.stack([loc, np.log(scale)], axis=-1).astype("float32")
    got = keras.ops.convert_to_numpy(
        likelihoods.location_scale_log_likelihood(kind, x.astype("float32"), params))
    np.testing.assert_allclose(got, logpdf(x, loc, scale).sum(-1), rtol=1e-5, atol=1e-4)


# ----------------------------------------------------------------------------- scaling
def make_vae(d=4, latent=2, likelihood="student_t", loc=None, scale=None):
    encoder, decoder = scaling.tabular_networks(d, latent, (8,), loc=loc, scale=scale)
    return VAE(encoder, decoder, likelihood=likelihood, seed=0)


def test_robust_statistics():
    x = np.array([[1.0, 5.0, 2.0], [2.0, 5.0, 2.0], [3.0, 5.0, 2.0], [4.0, 5.0, 9.0],
                  [100.0, 5.0, 2.0]])
    loc, scale = scaling.robust_statistics(x)
    np.testing.assert_allclose(loc, [3.0, 5.0, 2.0])
    # IQR / 1.349 where the IQR is positive; the std where it is 0 but the column varies;
    # 1 for a constant column
    np.testing.assert_allclose(scale, [2.0 / 1.349, 1.0, x[:, 2].std()], rtol=1e-6)


def test_likelihood_is_the_raw_rows_density():
    """ln p(raw x) = ln p(standardized x) - sum_j ln scale_j, with the standardized density's
    location and scale the network's outputs before ToDataUnits."""
    rng = np.random.default_rng(2)
    loc, scale = rng.normal(size=4).astype("float32") * 50, np.exp(rng.normal(size=4) * 2)
    scale = scale.astype("float32")
    vae = make_vae(loc=loc, scale=scale)
    z = rng.normal(size=(6, 2)).astype("float32")
    x = (loc + scale * rng.normal(size=(6, 4))).astype("float32")
    params = keras.ops.convert_to_numpy(vae.decoder(z))
    inner = keras.Model(vae.decoder.input, vae.decoder.get_layer("per_feature").output)
    raw = keras.ops.convert_to_numpy(inner(z))
    std_loc, std_scale = raw[..., 0], 0.01 + np.log1p(np.exp(raw[..., 1]))
    expected = (stats.t.logpdf((x - loc) / scale, likelihoods.STUDENT_T_DF, std_loc, std_scale)
                .sum(-1) - np.log(scale).sum())
    got = keras.ops.convert_to_numpy(vae.log_likelihood_given(x, params))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
    # the encoder sees standardized, clipped values
    standardize = vae.encoder.get_layer("standardize")
    far = np.array([loc + 1e6 * scale], dtype="float32")
    assert keras.ops.convert_to_numpy(standardize(far)).max() == pytest.approx(10.0)


def test_keras_round_trip_gives_identical_scores_on_raw_rows(tmp_path):
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(64, 4)) * [1, 10, 1000, 0.01] + 500).astype("float32")
    vae = make_vae(loc=np.median(x, 0), scale=x.std(0))
    vae.compile(optimizer="adam", jit_compile=False, steps_per_execution=1)
    vae.fit(x, epochs=2, batch_size=16, verbose=0)
    before = score_rows(vae, x, "iwae", num_samples=8, seed=0)
    vae.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(score_rows(loaded, x, "iwae", num_samples=8, seed=0), before)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded.encoder.get_layer("standardize").loc),
        np.median(x, 0))
    assert loaded.likelihood == "student_t" and loaded.params_shape == (4, 2)


def test_wrong_decoder_shape_names_the_likelihood():
    encoder, decoder = scaling.tabular_networks(3, 2, (4,))
    with pytest.raises(ValueError, match=r"the 'gaussian' likelihood needs \(3,\)"):
        VAE(encoder, decoder, likelihood="gaussian")


@pytest.mark.large
def test_scaling_layers_export_to_onnx():
    """Raw rows into the ONNX encoder, raw-unit [location, log-scale] out of the ONNX decoder,
    as in Keras (tf2onnx, the converter the exporter uses)."""
    assert keras.backend.backend() == "tensorflow", \
        "tf2onnx converts TensorFlow graphs: run the export tests on the TensorFlow backend"
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    loc, scale = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 10.0, 100.0, 0.1])
    vae = make_vae(loc=loc, scale=scale)
    rng = np.random.default_rng(4)
    x = (rng.normal(size=(5, 4)) * scale + loc).astype("float32")
    for net, inputs in ((vae.encoder, x), (vae.decoder, x[:, :2].copy())):
        spec = (tf.TensorSpec((None,) + tuple(net.inputs[0].shape[1:]), tf.float32,
                              name="inputs"),)
        function = tf.function(lambda t, net=net: net(t, training=False), input_signature=spec)
        proto, _ = tf2onnx.convert.from_function(function, input_signature=spec, opset=17)
        session = ort.InferenceSession(proto.SerializeToString())
        got = session.run(None, {"inputs": inputs})
        want = net(inputs)
        want = want if isinstance(want, (list, tuple)) else [want]
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, keras.ops.convert_to_numpy(b), rtol=1e-5, atol=1e-5)
