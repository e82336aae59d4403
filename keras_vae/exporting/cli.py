"""`keras-vae export`."""

from pathlib import Path

import numpy as np

from keras_vae.datasets import read_npz
from keras_vae.exporting.api import export


# --------------------------------------------------------------------------- command line
def load_vae(path):
    """Loads a VAE from a run directory (which holds `model.keras`) or a `.keras` file."""
    import keras

    from keras_vae.model import VAE

    path = Path(path)
    if path.is_dir():
        model_file = path / "model.keras"
        if not model_file.is_file():
            raise FileNotFoundError(f"{path} has no model.keras; pass a run directory written by "
                                    "`keras-vae train` or a .keras file.")
    elif path.is_file():
        if path.suffix != ".keras":
            raise ValueError(f"{path} is not a .keras file; pass a run directory or a file "
                             "saved with vae.save('name.keras').")
        model_file = path
    else:
        raise FileNotFoundError(f"{path} does not exist; pass a run directory or a .keras file.")
    model = keras.saving.load_model(model_file, compile=False)
    if not isinstance(model, VAE):
        raise ValueError(f"{model_file} holds a {type(model).__name__}, not a keras_vae VAE.")
    return model


def load_source(spec, verbose=True):
    """(vae, source) for SOURCE: a run directory, a .keras file, or a zoo name / preset handle.

    `source` describes it for the manifest and the card ({"kind": "run"|"keras_file"|"zoo"|
    "preset", ...})."""
    from keras_vae import zoo
    from keras_vae.model import VAE
    from keras_vae.zoo.registry import REGISTRY

    path = Path(spec)
    from_preset = getattr(VAE, "from_preset", None)
    if path.is_dir() and not (path / "model.keras").exists() and from_preset is not None \
            and (path / "config.json").is_file() and not (path / "history.csv").exists():
        # a preset folder (config.json + weights), not a run directory
        return from_preset(str(path)), {"kind": "preset", "name": path.name,
                                        "path": str(path.resolve())}
    if path.exists():
        kind = "run" if path.is_dir() else "keras_file"
        return load_vae(path), {"kind": kind, "path": str(path.resolve())}
    if spec in REGISTRY:
        return zoo.load(spec, compile=False, verbose=verbose), {"kind": "zoo", "name": spec}
    looks_like_path = "://" not in spec and (spec.endswith(".keras") or "/" in spec
                                             or "\\" in spec)
    if from_preset is not None and not looks_like_path:
        return from_preset(spec), {"kind": "preset", "name": spec}
    raise FileNotFoundError(
        f"{spec} does not exist and is not a zoo model; pass a run directory, a .keras file "
        "or a zoo name (keras-vae zoo list).")


def load_array(path, key=None):
    """Inputs from a .npy file or a .npz archive (array `key`, else "test", "valid", "x",
    "train", or its only array), as float32."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--data {path} does not exist.")
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False).astype("float32")
    if path.suffix != ".npz":
        raise ValueError(f"--data {path}: expected a .npy or .npz file.")
    archive = read_npz(str(path))
    names = list(archive)
    if key is None:
        key = next((k for k in ("test", "valid", "x", "train") if k in names),
                   names[0] if len(names) == 1 else None)
    if key not in names:
        raise ValueError(f"--data {path} has arrays {names}; choose one with --data-key.")
    return archive[key].astype("float32")


def run_command(args):
    vae, source = load_source(args.model, verbose=not args.quiet)
    data = load_array(args.data, args.data_key) if args.data else None
    if data is not None and data.ndim >= 2 and tuple(data.shape[1:]) != vae.input_shape_ \
            and int(np.prod(data.shape[1:])) == int(np.prod(vae.input_shape_)):
        data = data.reshape((-1,) + tuple(vae.input_shape_))
    name = args.name or (source["name"] if "name" in source else
                         Path(args.model).name if Path(args.model).is_dir()
                         else Path(args.model).stem)
    manifest = export(vae, args.out, formats=args.formats, opset=args.opset,
                      overwrite=args.overwrite, data=data, name=name, seed=args.seed,
                      verbose=not args.quiet, source=source,
                      ort_web=args.ort_web)
    if args.quiet:
        print(args.out)
    return 0 if manifest else 1
