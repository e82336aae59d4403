"""Choices the `keras-vae` parser offers, copied from the modules that own them so that
building the parser imports nothing heavy. tests/test_cli_fast.py checks each against its
owner (named beside it)."""

MODELS = ("kingma-welling", "mlp", "conv", "pixel-cnn")  # keras_vae.training.recipe.MODELS
DEFAULT_HIDDEN = {"kingma-welling": (500,), "mlp": (512, 256), "conv": (32, 64),
                  "pixel-cnn": (32, 64)}  # keras_vae.training.recipe.DEFAULT_HIDDEN
OBJECTIVES = ("elbo", "iwae", "iwae_dreg")  # keras_vae.model.OBJECTIVES
PRIORS = ("standard", "vamp", "mog")  # keras_vae.priors.PRIORS
DATASET_NAMES = (  # keras_vae.datasets.known_names()
    "digits", "mnist", "fashion_mnist", "binarized_mnist", "emnist", "emnist/balanced",
    "emnist/byclass", "emnist/bymerge", "emnist/digits", "emnist/letters", "emnist/mnist")
SPLITS = ("train", "valid", "test")  # keras_vae.datasets.SPLITS
BINARIZE = (None, "static", "dynamic", "threshold")  # keras_vae.datasets.BINARIZE
STRATEGIES = ("default", "mirrored", "multiworker")  # keras_vae.distribute.STRATEGIES
MIXED_PRECISION = (None, "mixed_float16", "mixed_bfloat16")  # ...MIXED_PRECISION_POLICIES
FORMATS = {  # keras_vae.exporting.formats.FORMATS
    "saved_model": "saved_model/encoder/1/, saved_model/decoder/1/: TensorFlow SavedModels "
                   "(fp32) in TF Serving's <base>/<version>/ layout",
    "onnx": "encoder.onnx, decoder.onnx (fp32)",
    "onnx_fp16": "encoder.fp16.onnx, decoder.fp16.onnx: float16 weights and math, float32 I/O",
    "onnx_int8": "encoder.int8.onnx, decoder.int8.onnx: int8 (dynamic quantization for MLPs, "
                 "static QDQ calibrated on inputs for convolutional nets)",
    "tflite": "encoder.tflite, decoder.tflite: LiteRT flatbuffers (fp32, built-in ops only)",
    "tflite_int8": "encoder.int8.tflite, decoder.int8.tflite: LiteRT, int8 weights and "
                   "activations (calibrated), float32 I/O, built-in ops only",
}
DEFAULT_FORMATS = ("saved_model", "onnx")  # keras_vae.exporting.formats.DEFAULT_FORMATS
URL_ENV = "KERAS_VAE_WEIGHTS_URL"  # keras_vae.zoo.downloader.URL_ENV
OFFLINE_ENV = "KERAS_VAE_OFFLINE"  # keras_vae.zoo.downloader.OFFLINE_ENV
TABLE_LIKELIHOODS = ("gaussian_hetero", "student_t", "laplace")  # keras_vae.likelihoods.TWO_PARAMETER
DETECTOR_SCORES = ("elbo", "iwae")  # keras_vae.detector.SCORES
DEFAULT_CONTAMINATION = 0.05  # keras_vae.training.tabular.DEFAULT_CONTAMINATION
