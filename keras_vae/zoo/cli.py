"""The `keras-vae zoo` commands: list, info, download, build, push, export."""

import json
import os
import shlex
import sys
from pathlib import Path

from keras_vae.zoo import preset, registry
from keras_vae.zoo.builder import build
from keras_vae.zoo.downloader import download, info
from keras_vae.zoo.registry import released_names, table


def cmd_list(args):
    if args.json:
        print(json.dumps(registry.list(include_unreleased=args.all), indent=2))
    else:
        print(table(markdown=args.markdown))
        if not args.markdown:
            print("\nNLL and -ELBO in nats per test example (lower is better); the NLL uses k "
                  "importance samples on the listed test examples, compare it with the -ELBO "
                  "of those.")
    return 0


def cmd_info(args):
    print(json.dumps(info(args.name), indent=2))
    return 0


def cmd_download(args):
    names = args.names or released_names()
    for name in names:
        try:
            path = download(name, base_url=args.base_url, offline=args.offline or None)
        except KeyboardInterrupt:  # Ctrl-C: the partial file is already gone
            print(f"keras-vae zoo: error: interrupted while fetching {name!r}; nothing was "
                  "kept in the cache. Run the command again to fetch it.", file=sys.stderr)
            return 130
        print(f"{name}\t{path}")
    return 0


def portable_command(command):
    """A recorded command without machine paths: an absolute path or one under the home
    folder becomes ../shared/datasets/FILE when it is a file of the shared data sets, else
    PATH."""
    words = shlex.split(command)
    home = os.path.expanduser("~")
    for i, word in enumerate(words):
        if os.path.isabs(word) or (home not in ("", "/") and word.startswith(home)):
            parts = Path(word).parts
            if "shared" in parts and parts.index("shared") + 1 < len(parts):
                words[i] = "../" + "/".join(parts[parts.index("shared"):])
            else:
                words[i] = "PATH"
    return shlex.join(words)


def record_build(name, entry, weights, registry_dir=registry.PRESETS_DIR):
    """Writes a finished build into the registry: `registry_dir/NAME/preset.json` (and, for a
    packaged preset, its whole folder), atomically; returns the path of preset.json."""
    recipe = dict(registry.REGISTRY.get(name) or registry.get_entry(name, released=False))
    measured = {k: entry[k] for k in ("sha256", "size_bytes", "parameters", "training",
                                      "results")}
    measured["training"] = dict(measured["training"],
                                command=portable_command(measured["training"]["command"]))
    recipe.update(measured, name=name)
    recipe.setdefault("handle", preset.default_handle(name))
    folder = Path(registry_dir) / name
    if (folder / preset.WEIGHTS_FILE).is_file():  # a packaged preset: refresh its files too
        written = preset.write_preset(recipe, weights, folder, overwrite=True)
    else:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="keras-vae-preset-") as tmp:
            written = preset.write_preset(recipe, weights, Path(tmp) / name)
        registry.write_entry(written, registry_dir)
    registry.REGISTRY[name] = written
    return folder / registry.PRESET_FILE


def cmd_build(args):
    entry = build(args.name, data=args.data, out=args.out, overwrite=args.overwrite,
                  max_epochs=args.max_epochs, patience=args.patience,
                  time_limit=args.time_limit, nll_samples=args.nll_samples,
                  nll_examples=args.nll_examples,
                  run_dir=args.run_dir or os.path.join("runs", "zoo", args.name))
    weights = Path(args.out) / entry["file"]
    path = record_build(args.name, entry, weights,
                        registry_dir=args.registry or registry.PRESETS_DIR)
    print(f"Wrote {weights} and the registry entry {path}.", file=sys.stderr)
    print(json.dumps({k: entry[k] for k in ("sha256", "size_bytes", "parameters", "results")},
                     indent=2))
    return 0


def cmd_push(args):
    handle, url = preset.push(args.source, args.to, message=args.message,
                              base_url=args.base_url)
    print(f"{args.source}\t{handle}\t{url}")
    return 0


def cmd_export(args):
    entry = preset.export_preset(args.name, args.out, base_url=args.base_url,
                                 overwrite=args.overwrite)
    print(f"{args.name}\t{Path(args.out)}\t{len(entry['files']) + 1} files")
    return 0
