"""The package's import structure: no import circle inside keras_vae and no import from a lower
layer to a higher one, counting every import statement (function-level ones too), parsed from
the source with `ast`. The layer order is the one the README's "Package map" states."""

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "keras_vae"

# Lowest first. A module may import modules of its own layer or of lower layers only; a package
# (its __init__) belongs to the layer of its modules. `keras_vae` itself (the package's
# __init__: the public API) and the command line sit on top of everything.
LAYERS = (
    ("keras_vae.version", "keras_vae.compat", "keras_vae.files"),
    ("keras_vae.distributions", "keras_vae.likelihoods"),
    ("keras_vae.layers", "keras_vae.priors"),
    ("keras_vae.networks", "keras_vae.scaling"),
    ("keras_vae.evaluation", "keras_vae.diagnostics", "keras_vae.drawing"),
    ("keras_vae.callbacks",),  # plain Keras callbacks: they read the model's attributes only
    ("keras_vae.model",),
    ("keras_vae.hierarchical",),  # the two-stochastic-layer VAE, a subclass of model.VAE
    ("keras_vae.datasets", "keras_vae.distribute", "keras_vae.plots", "keras_vae.detector"),
    ("keras_vae.training",),
    ("keras_vae.web",),  # the browser page of an export
    ("keras_vae.zoo", "keras_vae.exporting"),
    ("keras_vae.cli", "keras_vae.__main__"),
    ("keras_vae",),
)


def module_name(path):
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules():
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path, modules):
    """The keras_vae modules a file imports anywhere in it (module level or in functions)."""
    name = module_name(path)
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the submodule pkg.sub where one exists
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # keras_vae.x.y -> the module that holds y
                target = target.rpartition(".")[0]
            if target and target.startswith("keras_vae") and target != name:
                found.add(target)
    return found


def import_graph():
    modules = all_modules()
    return {name: imported_modules(path, modules) for name, path in modules.items()}


def layer_of(module):
    """The index in LAYERS of the most specific prefix of `module`."""
    best, best_len = None, -1
    for index, names in enumerate(LAYERS):
        for prefix in names:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def find_cycle(graph):
    """One import circle as a list of modules (first == last), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_every_module_has_a_layer():
    assert [m for m in all_modules() if layer_of(m) is None] == []


def test_no_import_circle_inside_keras_vae():
    # A package's __init__ re-exporting its own submodules is not a circle with them as long
    # as they do not import the package back; so the whole graph must be acyclic.
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_no_module_imports_a_higher_layer():
    upward = sorted(f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
                    for m, targets in import_graph().items() for t in targets
                    if layer_of(t) > layer_of(m))
    assert upward == []


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    """The parser finds imports inside functions and `from . import x`: a file with only such
    imports yields their targets (so the tests above are not passing by seeing nothing)."""
    modules = {"keras_vae", "keras_vae.model", "keras_vae.zoo", "keras_vae.zoo.loader"}
    source = tmp_path / "keras_vae" / "zoo" / "builder.py"
    source.parent.mkdir(parents=True)
    source.write_text("def f():\n    from keras_vae import model\n\n"
                      "def g():\n    from . import loader\n    import keras_vae.zoo\n")
    global REPO
    saved, REPO = REPO, tmp_path
    try:
        assert imported_modules(source, modules) == {"keras_vae.model", "keras_vae.zoo.loader",
                                                     "keras_vae.zoo"}
    finally:
        REPO = saved
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_command_line_package_imports_nothing_of_keras_vae_to_build_its_parser():
    """keras_vae_cli (the `keras-vae` parser) names handlers as strings; it never imports
    keras_vae at module level (the one lazy use is reading keras_vae/version.py as a file)."""
    for path in sorted((REPO / "keras_vae_cli").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) \
                    else [node.module or ""]
                assert not any(n == "keras_vae" or n.startswith("keras_vae.") for n in names), \
                    (path.name, names)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
