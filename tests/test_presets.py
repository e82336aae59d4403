"""Presets: `VAE.from_preset` for every kind of handle, downloads through huggingface_hub from a
small fake Hugging Face Hub on 127.0.0.1 (its download and upload endpoints), bounded
downloads (size limit, idle timeout), publishing with `keras-vae zoo push`, the registry as
data, and the packaged presets of the wheel.
"""

import base64
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

import keras_vae as kv
from keras_vae import zoo
from keras_vae.zoo import downloader, hub, preset, registry

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "weights"
SMALL = "kw_digits_z2"
PACKAGED = ("kw_digits_z2", "mlp_digits_z8", "conv_digits_z4")


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def sha256(path):
    return sha256_bytes(Path(path).read_bytes())


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file())


# ----------------------------------------------------------------- a fake Hugging Face Hub
class FakeHub:
    """The endpoints huggingface_hub uses to download and upload a model repository, served on
    127.0.0.1 from memory: HEAD/GET /{repo}/resolve/{revision}/{file}, GET
    /api/models/{repo}/revision/{revision}, GET /api/models/{repo}/tree/{revision}, POST
    /api/validate-yaml, POST /api/repos/create, POST
    /api/models/{repo}/preupload/{revision}, POST /api/models/{repo}/commit/{revision}, GET
    /api/whoami-v2. Every upload is a commit (a full snapshot with a 40-hex id); branches map to
    commits. `modes[file]` changes how GET serves a file: "corrupt" (one byte flipped),
    "short" (half the body, with a matching Content-Length), "flood" (endless data, no
    Content-Length), "stall" (headers and 1000 bytes, then silence). `requests` lists
    (method, path)."""

    def __init__(self):
        self.repos = {}  # repo_id -> {"commits": {sha: {path: bytes}}, "refs": {branch: sha}}
        self.modes = {}
        self.requests = []
        self.cards = []
        self.stop_event = threading.Event()
        hub_server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status, body=b"", headers=None, content_type="application/json"):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self, data, status=200):
                self._send(status, json.dumps(data).encode())

            def _error(self, status, code):
                self._send(status, json.dumps({"error": code}).encode(), {"X-Error-Code": code})

            def _body(self):
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_HEAD(self):
                self.do_GET()

            def do_GET(self):
                path = urllib.parse.urlsplit(self.path).path
                hub_server.requests.append((self.command, path))
                if path == "/api/whoami-v2":
                    return self._json({"name": "tester", "type": "user", "orgs": [],
                                       "auth": {"accessToken": {"role": "write"}}})
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", path)
                if m:
                    repo, sha = hub_server.resolve(m.group(1), urllib.parse.unquote(m.group(2)))
                    if repo is None:
                        return self._error(404, "RepoNotFound")
                    files = repo["commits"][sha]
                    return self._json({"id": m.group(1), "modelId": m.group(1), "sha": sha,
                                       "private": False, "siblings": [
                                           {"rfilename": f, "size": len(b)}
                                           for f, b in sorted(files.items())]})
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)", path)
                if m:  # the file list snapshot_download (keras.saving.load_model) reads
                    repo, sha = hub_server.resolve(m.group(1), urllib.parse.unquote(m.group(2)))
                    if repo is None:
                        return self._error(404, "RevisionNotFound")
                    return self._json([{"type": "file", "path": f, "size": len(b),
                                        "oid": sha256_bytes(b)}
                                       for f, b in sorted(repo["commits"][sha].items())])
                m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if not m:
                    return self._error(404, "NotFound")
                repo, sha = hub_server.resolve(m.group(1), urllib.parse.unquote(m.group(2)))
                if repo is None:
                    return self._error(404, "RepoNotFound")
                data = repo["commits"][sha].get(m.group(3))
                if data is None:
                    return self._error(404, "EntryNotFound")
                headers = {"X-Repo-Commit": sha, "ETag": f'"{sha256_bytes(data)}"',
                           "Accept-Ranges": "none"}
                mode = hub_server.modes.get(m.group(3), "ok")
                if self.command == "HEAD" or mode == "ok":
                    return self._send(200, data, headers, "application/octet-stream")
                serve(self, data, mode, headers, hub_server.stop_event)

            def do_POST(self):
                path = urllib.parse.urlsplit(self.path).path
                hub_server.requests.append((self.command, path))
                body = self._body()
                if path == "/api/validate-yaml":  # the model card's metadata
                    errors = card_errors(json.loads(body)["content"])
                    hub_server.cards.append(json.loads(body)["content"])
                    return self._json({"errors": [{"message": e} for e in errors],
                                       "warnings": []}, 400 if errors else 200)
                if path == "/api/repos/create":
                    payload = json.loads(body)
                    repo_id = "/".join(filter(None, [payload.get("organization"),
                                                     payload["name"]]))
                    if "/" not in repo_id:
                        repo_id = f"tester/{repo_id}"
                    hub_server.repos.setdefault(repo_id, {"commits": {"0" * 40: {}},
                                                          "refs": {"main": "0" * 40}})
                    return self._json({"url": f"{hub_server.url}/{repo_id}", "name": repo_id})
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/([^/]+)", path)
                if m:
                    files = json.loads(body)["files"]
                    return self._json({"files": [{"path": f["path"], "uploadMode": "regular",
                                                  "shouldIgnore": False} for f in files]})
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/([^/]+)", path)
                if m:
                    repo, sha = hub_server.resolve(m.group(1), urllib.parse.unquote(m.group(2)))
                    if repo is None:
                        return self._error(404, "RepoNotFound")
                    files = dict(repo["commits"][sha])
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            value = item["value"]
                            assert value.get("encoding", "base64") == "base64"
                            files[value["path"]] = base64.b64decode(value["content"])
                        elif item["key"] == "deletedFile":
                            files.pop(item["value"]["path"], None)
                        elif item["key"] != "header":
                            return self._error(400, f"Unsupported {item['key']}")
                    new = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()
                    repo["commits"][new] = files
                    repo["refs"][urllib.parse.unquote(m.group(2))] = new
                    return self._json({"commitUrl": f"{hub_server.url}/{m.group(1)}/commit/{new}",
                                       "commitOid": new, "pullRequestUrl": None})
                return self._error(404, "NotFound")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def resolve(self, repo_id, revision):
        repo = self.repos.get(repo_id)
        if repo is None:
            return None, None
        sha = repo["refs"].get(revision, revision)
        return (repo, sha) if sha in repo["commits"] else (None, None)

    def add(self, repo_id, files):
        """A repository whose main branch holds `files` ({path: bytes})."""
        sha = hashlib.sha1(repo_id.encode()).hexdigest()
        self.repos[repo_id] = {"commits": {sha: dict(files)}, "refs": {"main": sha}}
        return sha

    def stop(self):
        self.stop_event.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def card_errors(card):
    """What the Hub would reject in a model card's YAML header (the subset keras-vae writes)."""
    import yaml

    if not card.startswith("---\n"):
        return ["no YAML header"]
    try:
        meta = yaml.safe_load(card.split("---\n")[1])
    except yaml.YAMLError as err:
        return [f"YAML: {err}"]
    errors = [f"missing {key}" for key in ("library_name", "license", "datasets", "tags",
                                           "model-index") if key not in meta]
    for model in meta.get("model-index", []):
        for result in model["results"]:
            if not {"type", "name"} <= set(result["task"]) or "type" not in result["dataset"]:
                errors.append("model-index: task needs type and name, dataset a type")
            for metric in result["metrics"]:
                if not isinstance(metric.get("value"), (int, float)) or "type" not in metric:
                    errors.append(f"model-index: bad metric {metric}")
    return errors


def serve(handler, data, mode, headers, stop_event):
    """Writes a bad response body for `mode` (see FakeHub / MirrorServer)."""
    handler.close_connection = True
    handler.send_response(200)
    handler.send_header("Content-Type", "application/octet-stream")
    for key, value in headers.items():
        handler.send_header(key, value)
    try:
        if mode == "ok":
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        elif mode == "corrupt":
            body = data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:]
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        elif mode == "short":
            body = data[: len(data) // 2]
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        elif mode == "flood":  # no length: data until the client hangs up (at most 64 MiB)
            handler.end_headers()
            block = b"\0" * 65536
            for _ in range(1024):
                if stop_event.is_set():
                    break
                handler.wfile.write(block)
        elif mode == "stall":
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data[:1000])
            handler.wfile.flush()
            stop_event.wait(60)
        handler.wfile.flush()
    except (BrokenPipeError, ConnectionResetError):
        pass


class MirrorServer:
    """A plain static mirror of WEIGHTS (the KERAS_VAE_WEIGHTS_URL layout) with the same bad
    modes as FakeHub."""

    def __init__(self):
        self.modes = {}
        self.requests = []
        self.stop_event = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append(self.path)
                name = self.path.rsplit("/", 1)[-1]
                path = WEIGHTS / name
                if not path.is_file():
                    self.send_error(404)
                    return
                serve(self, path.read_bytes(), server.modes.get(name, "corrupt"), {},
                      server.stop_event)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.stop_event.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Fresh Keras and Hugging Face caches, and no zoo or Hub settings from the caller."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_fake_test_token")
    for name in (zoo.URL_ENV, zoo.OFFLINE_ENV, "HF_HUB_OFFLINE", "HF_ENDPOINT",
                 zoo.TIMEOUT_ENV):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def fake_hub(monkeypatch):
    server = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    yield server
    server.stop()


@pytest.fixture
def mirror():
    server = MirrorServer()
    yield server
    server.stop()


def hf_cache_files(tmp_path):
    """Every file in the Hugging Face cache's blob folders (complete or partial)."""
    return sorted(str(p) for p in (tmp_path / "hf_cache").glob("models--*/blobs/*"))


def publish_zoo_small(server):
    """The zoo's hf://keras-vae/kw_digits_z2 repository, as `zoo push` would lay it out."""
    folder = registry.PRESETS_DIR / SMALL
    return server.add(f"keras-vae/{SMALL}", {p.name: p.read_bytes() for p in folder.iterdir()})


def same_weights(a, b):
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(np.array_equal(x, y) for x, y in zip(wa, wb))


@pytest.fixture(scope="module")
def packaged_small():
    return kv.VAE.from_preset(SMALL, verbose=False)


# ----------------------------------------------------------------- the registry is data
def test_registry_is_one_preset_json_per_model_and_matches_the_files():
    folders = sorted(p.parent.name for p in registry.PRESETS_DIR.glob("*/preset.json"))
    assert folders == sorted(zoo.REGISTRY)
    assert list(zoo.REGISTRY) == [n for n, _ in sorted(zoo.REGISTRY.items(),
                                                         key=lambda kv_: kv_[1]["order"])]
    for name in zoo.released_names():
        entry = json.loads((registry.PRESETS_DIR / name / "preset.json").read_text())
        assert entry == zoo.REGISTRY[name]
        assert entry["handle"] == f"hf://keras-vae/{name}"
        # The weights the registry describes are the repository's file, byte for byte.
        assert entry["files"]["model.weights.h5"] == {"sha256": entry["sha256"],
                                                      "size_bytes": entry["size_bytes"]}
        assert sha256(WEIGHTS / entry["file"]) == entry["sha256"]
        for needle in (str(REPO), str(Path.home())):
            assert needle not in entry["training"]["command"], needle
        assert not any(os.path.isabs(w) for w in entry["training"]["command"].split())
    # The packaged presets are complete preset folders, under 1 MB together.
    total = 0
    for name in PACKAGED:
        folder = registry.packaged_folder(name)
        assert folder == registry.PRESETS_DIR / name  # shipped in the package, weights included
        entry = preset.read_preset(folder)
        for filename, spec in entry["files"].items():
            assert sha256(folder / filename) == spec["sha256"], (name, filename)
            assert (folder / filename).stat().st_size == spec["size_bytes"]
            total += spec["size_bytes"]
    assert total < 1_000_000
    assert {n for n in zoo.released_names() if registry.packaged_folder(n)} == set(PACKAGED)


def test_zoo_list_json_holds_no_machine_paths(capsys):
    from keras_vae.cli import main

    for args in (["zoo", "list", "--json"], ["zoo", "list", "--json", "--all"]):
        assert main(args) == 0
        text = capsys.readouterr().out
        rows = json.loads(text)
        assert [r["name"] for r in rows][: len(zoo.released_names())] == zoo.released_names()
        for needle in (str(REPO), str(Path.home()), tempfile.gettempdir()):
            assert needle not in text, needle
        for value in re.findall(r'"([^"]*)"', text):
            assert not value.startswith("/") and not re.match(r"^[A-Za-z]:\\", value), value


def test_portable_command_removes_machine_paths(tmp_path):
    from keras_vae.zoo.cli import portable_command

    home = str(Path.home())
    data = tmp_path / "shared" / "datasets" / "bm.npz"  # an absolute path to shared data
    assert (portable_command(f"keras-vae zoo build x --data {data}")
            == "keras-vae zoo build x --data ../shared/datasets/bm.npz")
    assert (portable_command(f"keras-vae zoo build x --data {home}/mnist.npz --time-limit 9")
            == "keras-vae zoo build x --data PATH --time-limit 9")
    assert (portable_command("keras-vae zoo build x --data rel/mnist.npz")
            == "keras-vae zoo build x --data rel/mnist.npz")


def test_build_writes_its_registry_entry_atomically(tmp_path):
    """`zoo build`'s record step: the measured numbers land in NAME/preset.json (no machine
    paths), with the hash of every file of the preset; nothing else is left behind."""
    from keras_vae.zoo.cli import record_build

    measured = {"sha256": zoo.REGISTRY[SMALL]["sha256"],
                "size_bytes": zoo.REGISTRY[SMALL]["size_bytes"], "parameters": 27268,
                "training": dict(zoo.REGISTRY[SMALL]["training"],
                                 command=f"keras-vae zoo build {SMALL} --out {tmp_path}/w"),
                "results": dict(zoo.REGISTRY[SMALL]["results"], test_nll=1.0)}
    saved = dict(zoo.REGISTRY[SMALL])
    try:
        path = record_build(SMALL, measured, WEIGHTS / f"{SMALL}.weights.h5",
                            registry_dir=tmp_path / "reg")
        written = json.loads(path.read_text())
    finally:
        zoo.REGISTRY[SMALL] = saved
    assert path == tmp_path / "reg" / SMALL / "preset.json"
    assert files_under(tmp_path / "reg") == [f"{SMALL}/preset.json"]
    assert written["training"]["command"] == f"keras-vae zoo build {SMALL} --out PATH"
    assert written["results"]["test_nll"] == 1.0 and written["train"] == saved["train"]
    assert set(written["files"]) == {"config.json", "metadata.json", "model.weights.h5",
                                     "README.md"}
    assert written["files"]["model.weights.h5"]["sha256"] == saved["sha256"]
    assert registry.read_presets(tmp_path / "reg")[SMALL] == written


# ----------------------------------------------------------------- local handles
def test_packaged_preset_loads_without_network_or_settings(packaged_small, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(zoo.OFFLINE_ENV, "1")
    folder = registry.packaged_folder(SMALL)
    assert downloader.source(zoo.REGISTRY[SMALL]) == ("package", folder / "model.weights.h5")
    assert zoo.download(SMALL, verbose=False) == str(folder / "model.weights.h5")
    vae = kv.VAE.from_pretrained(SMALL, verbose=False)  # the old name of from_preset
    assert vae.name == SMALL and same_weights(vae, packaged_small)
    from_folder = kv.VAE.from_preset(str(folder), seed=4)
    assert from_folder.seed == 4 and same_weights(from_folder, packaged_small)


def test_checkout_weights_serve_as_the_mirror(monkeypatch):
    """From a source checkout the repository's weights/ is read with no settings."""
    assert downloader.checkout_weights() == WEIGHTS
    big = "kw_mnist_z20"
    assert downloader.source(zoo.REGISTRY[big]) == ("checkout", WEIGHTS / f"{big}.weights.h5")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    vae = kv.VAE.from_preset(big, verbose=False, compile=False)
    assert vae.latent_dim == 20
    # A damaged checkout file is refused, never loaded.
    monkeypatch.setattr(downloader, "checkout_weights", lambda: Path(os.environ["KERAS_HOME"]))
    (Path(os.environ["KERAS_HOME"])).mkdir(parents=True, exist_ok=True)
    (Path(os.environ["KERAS_HOME"]) / f"{big}.weights.h5").write_bytes(b"damaged")
    with pytest.raises(zoo.IntegrityError, match=f"{big}.*sha256"):
        kv.VAE.from_preset(big, verbose=False)


def test_pulled_folder_and_keras_load_model_agree(tmp_path, packaged_small):
    import keras

    folder = tmp_path / "exported"
    entry = zoo.export_preset(SMALL, folder, verbose=False)
    assert files_under(folder) == ["README.md", "config.json", "metadata.json",
                                   "model.weights.h5", "preset.json"]
    card = (folder / "README.md").read_text()
    header = card.split("---")[1]
    for line in ("library_name: keras", "license: apache-2.0", "- digits", "- keras-vae",
                 "model-index:", "type: test_neg_elbo", f"value: {entry['results']['test_nll']}"):
        assert line in header, line
    plain = keras.saving.load_model(folder)
    assert isinstance(plain, kv.VAE) and same_weights(plain, packaged_small)
    with pytest.raises(FileExistsError, match="overwrite"):
        zoo.export_preset(SMALL, folder, verbose=False)
    # A tampered file is caught before use.
    weights = folder / "model.weights.h5"
    data = weights.read_bytes()
    weights.write_bytes(data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:])
    with pytest.raises(zoo.IntegrityError, match="sha256"):
        kv.VAE.from_preset(str(folder))
    with pytest.raises(ValueError, match="No preset folder at"):
        kv.VAE.from_preset(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="Did you mean 'kw_digits_z2'"):
        kv.VAE.from_preset("kw_digit_z2")
    with pytest.raises(ValueError, match="cannot change latent_dim"):
        kv.VAE.from_preset(SMALL, latent_dim=3)


def test_url_handles_reach_the_mirror(mirror, packaged_small):
    mirror.modes[f"{SMALL}.weights.h5"] = "ok"
    vae = kv.VAE.from_preset(mirror.url + SMALL, verbose=False)
    assert same_weights(vae, packaged_small)
    assert mirror.requests == [f"/{SMALL}.weights.h5"]
    vae = kv.VAE.from_preset(WEIGHTS.as_uri() + f"/{SMALL}.weights.h5", verbose=False)
    assert same_weights(vae, packaged_small)


# ----------------------------------------------------------------- bounded downloads (mirror)
def test_mirror_stops_a_server_that_sends_too_much(mirror, tmp_path):
    mirror.modes[f"{SMALL}.weights.h5"] = "flood"
    with pytest.raises(zoo.IntegrityError, match=f"more than .* bytes for zoo model '{SMALL}'"):
        zoo.download(SMALL, base_url=mirror.url, verbose=False)
    cache = tmp_path / "keras_home" / "models" / "keras_vae"
    assert files_under(cache) == []  # the partial file is gone


def test_mirror_gives_up_on_a_stalled_server(mirror, tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.TIMEOUT_ENV, "0.5")
    mirror.modes[f"{SMALL}.weights.h5"] = "stall"
    start = time.monotonic()
    with pytest.raises(zoo.DownloadError, match=f"stalled.*{zoo.TIMEOUT_ENV}"):
        zoo.download(SMALL, base_url=mirror.url, verbose=False)
    assert time.monotonic() - start < 10  # bounded, not a hang
    assert files_under(tmp_path / "keras_home" / "models" / "keras_vae") == []
    monkeypatch.setenv(zoo.TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match=f"{zoo.TIMEOUT_ENV}='soon'"):
        zoo.download(SMALL, base_url=mirror.url, verbose=False)


def test_mirror_ctrl_c_leaves_no_partial_file(mirror, tmp_path, monkeypatch, capsys):
    from keras_vae.zoo import fetch

    mirror.modes[f"{SMALL}.weights.h5"] = "ok"
    real = fetch._progress

    def interrupting(total, verbose):
        def update(n):
            raise KeyboardInterrupt
        return update

    monkeypatch.setattr(fetch, "_progress", interrupting)
    with pytest.raises(KeyboardInterrupt):
        zoo.download(SMALL, base_url=mirror.url, verbose=False)
    assert files_under(tmp_path / "keras_home" / "models" / "keras_vae") == []
    from keras_vae.cli import main

    assert main(["zoo", "download", SMALL, "--base-url", mirror.url]) == 130  # the CLI: one line
    err = capsys.readouterr().err
    (line,) = [l for l in err.splitlines() if "error" in l]
    assert "interrupted" in line and SMALL in line and "Traceback" not in err
    assert files_under(tmp_path / "keras_home" / "models" / "keras_vae") == []
    monkeypatch.setattr(fetch, "_progress", real)
    assert sha256(zoo.download(SMALL, base_url=mirror.url, verbose=False)) == \
        zoo.REGISTRY[SMALL]["sha256"]


# ----------------------------------------------------------------- the Hub
def test_hub_download_then_cache_hit_with_the_server_stopped(fake_hub, tmp_path,
                                                             packaged_small, monkeypatch):
    publish_zoo_small(fake_hub)
    handle = f"hf://keras-vae/{SMALL}"
    vae = kv.VAE.from_preset(handle, verbose=False)
    assert same_weights(vae, packaged_small)
    gets = [p for m, p in fake_hub.requests if m == "GET"]
    assert gets == [f"/keras-vae/{SMALL}/resolve/main/model.weights.h5"]
    blobs = hf_cache_files(tmp_path)
    assert len(blobs) == 1 and sha256(blobs[0]) == zoo.REGISTRY[SMALL]["sha256"]
    fake_hub.stop()
    again = kv.VAE.from_preset(handle, verbose=False)  # the cache, no server
    assert same_weights(again, packaged_small)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert same_weights(kv.VAE.from_preset(handle, verbose=False), packaged_small)


def test_hub_is_the_default_source_of_a_model_not_shipped(fake_hub, monkeypatch, tmp_path):
    big = "kw_mnist_z2"
    monkeypatch.setattr(downloader, "checkout_weights", lambda: None)  # as installed
    assert downloader.source(zoo.REGISTRY[big]) == ("hub", f"hf://keras-vae/{big}")
    fake_hub.add(f"keras-vae/{big}", {"model.weights.h5": (WEIGHTS / f"{big}.weights.h5")
                                      .read_bytes()})
    path = zoo.download(big, verbose=False)
    assert sha256(path) == zoo.REGISTRY[big]["sha256"]
    assert zoo.info(big)["cached"] is True and zoo.info(big)["source"] == "hub"


def test_hub_offline_mode_never_touches_the_network(fake_hub, monkeypatch, tmp_path):
    publish_zoo_small(fake_hub)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(zoo.DownloadError, match="offline"):
        kv.VAE.from_preset(f"hf://keras-vae/{SMALL}", verbose=False)
    assert fake_hub.requests == [] and hf_cache_files(tmp_path) == []


@pytest.mark.parametrize("mode", ["corrupt", "short", "flood"])
def test_hub_bad_file_raises_and_leaves_nothing_usable(fake_hub, tmp_path, mode):
    publish_zoo_small(fake_hub)
    fake_hub.modes["model.weights.h5"] = mode
    handle = f"hf://keras-vae/{SMALL}"
    with pytest.raises(zoo.IntegrityError) as info:
        kv.VAE.from_preset(handle, verbose=False)
    message = str(info.value)
    assert SMALL in message and f"{fake_hub.url}/keras-vae/{SMALL}/resolve/" in message
    assert "\n" not in message
    assert hf_cache_files(tmp_path) == []  # neither the bad file nor a partial one
    fake_hub.modes.clear()
    assert sha256(zoo.hub.download(handle, "model.weights.h5", zoo.REGISTRY[SMALL]["sha256"],
                                   zoo.REGISTRY[SMALL]["size_bytes"], verbose=False)) \
        == zoo.REGISTRY[SMALL]["sha256"]


def test_hub_ctrl_c_leaves_no_partial_file(fake_hub, tmp_path, monkeypatch):
    """Ctrl-C in the middle of a Hub transfer (raised where the bytes arrive) leaves neither
    a blob nor a partial file; the next load downloads and verifies the file."""
    publish_zoo_small(fake_hub)
    real = hub._limited_progress

    def interrupting(limit, verbose=True):
        class Interrupt(real(limit, verbose)):
            def update(self, n=1):
                raise KeyboardInterrupt
        return Interrupt

    monkeypatch.setattr(hub, "_limited_progress", interrupting)
    with pytest.raises(KeyboardInterrupt):
        kv.VAE.from_preset(f"hf://keras-vae/{SMALL}", verbose=False)
    assert ("GET", f"/keras-vae/{SMALL}/resolve/main/model.weights.h5") in fake_hub.requests
    assert hf_cache_files(tmp_path) == []
    # A download killed long ago (SIGKILL) left a partial file: the next download removes it.
    blobs = tmp_path / "hf_cache" / f"models--keras-vae--{SMALL}" / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    old = blobs / "0123abcd.deadbeef.incomplete"
    old.write_bytes(b"x" * 1000)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    monkeypatch.setattr(hub, "_limited_progress", real)
    kv.VAE.from_preset(f"hf://keras-vae/{SMALL}", verbose=False)
    assert [sha256(p) for p in hf_cache_files(tmp_path)] == [zoo.REGISTRY[SMALL]["sha256"]]


def test_hub_stalled_download_is_given_up_in_bounded_time(fake_hub, tmp_path, monkeypatch):
    publish_zoo_small(fake_hub)
    fake_hub.modes["model.weights.h5"] = "stall"
    monkeypatch.setenv(zoo.TIMEOUT_ENV, "0.3")
    start = time.monotonic()
    with pytest.raises(zoo.DownloadError) as info:
        kv.VAE.from_preset(f"hf://keras-vae/{SMALL}", verbose=False)
    # huggingface_hub resumes a stalled transfer 5 times, 1 s apart: ~6 x (0.3 + 1) s.
    assert time.monotonic() - start < 20
    assert SMALL in str(info.value) and zoo.TIMEOUT_ENV in str(info.value)
    assert hf_cache_files(tmp_path) == []


def test_hub_404_says_which_model_and_url(fake_hub, capsys, tmp_path, monkeypatch):
    with pytest.raises(zoo.DownloadError, match="HTTP 404") as info:
        kv.VAE.from_preset("hf://tester/no-such-model", verbose=False)
    assert "hf://tester/no-such-model" in str(info.value)
    assert f"{fake_hub.url}/tester/no-such-model/resolve/main/preset.json" in str(info.value)
    from keras_vae.cli import main

    monkeypatch.setattr(downloader, "checkout_weights", lambda: None)  # as installed
    fake_hub.add("keras-vae/kw_mnist_z20", {})  # the repository exists, the file does not
    code = main(["zoo", "download", "kw_mnist_z20"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "" and "Traceback" not in captured.err
    (line,) = [l for l in captured.err.splitlines() if l.startswith("keras-vae zoo: error:")]
    assert "404" in line and "'kw_mnist_z20'" in line
    assert f"{fake_hub.url}/keras-vae/kw_mnist_z20/resolve/main/model.weights.h5" in line
    assert hf_cache_files(tmp_path) == []


def test_push_then_pull_gives_identical_weights(fake_hub, tmp_path, packaged_small, capsys):
    from keras_vae.cli import main

    code = main(["zoo", "push", SMALL, "--to", "hf://tester/digits-vae"])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith(f"{SMALL}\thf://tester/digits-vae\t")
    repo, sha = fake_hub.resolve("tester/digits-vae", "main")
    assert sorted(repo["commits"][sha]) == ["README.md", "config.json", "metadata.json",
                                            "model.weights.h5", "preset.json"]
    assert len(fake_hub.cards) == 1 and card_errors(fake_hub.cards[0]) == []
    uploaded = json.loads(repo["commits"][sha]["preset.json"])
    assert uploaded["handle"] == "hf://tester/digits-vae"
    assert repo["commits"][sha]["model.weights.h5"] == \
        (registry.PRESETS_DIR / SMALL / "model.weights.h5").read_bytes()

    pulled = kv.VAE.from_preset("hf://tester/digits-vae", verbose=False)
    assert same_weights(pulled, packaged_small)
    pinned = kv.VAE.from_preset(f"hf://tester/digits-vae@{sha}", verbose=False)
    assert same_weights(pinned, packaged_small)
    # The pulled snapshot is a Keras model folder.
    import keras

    folder, entry = zoo.pull("hf://tester/digits-vae", verbose=False)
    assert entry["results"] == zoo.REGISTRY[SMALL]["results"]
    plain = keras.saving.load_model(folder)
    assert isinstance(plain, kv.VAE) and same_weights(plain, packaged_small)

    # A pulled preset whose file does not match its preset.json is refused.
    files = dict(repo["commits"][sha])
    data = files["model.weights.h5"]
    files["model.weights.h5"] = data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:]
    fake_hub.add("tester/tampered", files)
    with pytest.raises(zoo.IntegrityError, match="tester/tampered"):
        kv.VAE.from_preset("hf://tester/tampered", verbose=False)


def test_push_errors_are_one_line(fake_hub, capsys, monkeypatch):
    from keras_vae.cli import main

    assert main(["zoo", "push", SMALL, "--to", "tester/no-scheme"]) == 2
    err = capsys.readouterr().err
    assert "hf://owner/name" in err and err.count("\n") == 1
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    assert main(["zoo", "push", SMALL, "--to", "hf://tester/x"]) == 2
    err = capsys.readouterr().err
    assert "Could not push" in err and "HF_TOKEN" in err and err.count("\n") == 1


@pytest.mark.large
def test_keras_load_model_reads_a_pushed_preset_from_the_hub(fake_hub, tmp_path,
                                                             packaged_small):
    """Plain Keras, in a fresh interpreter: `import keras_vae` registers the VAE class, and
    keras.saving.load_model("hf://...") fetches the repository through huggingface_hub."""
    zoo.push(SMALL, "hf://tester/digits-vae", verbose=False)
    script = ("import sys, numpy as np, keras, keras_vae\n"
              "m = keras.saving.load_model('hf://tester/digits-vae')\n"
              "assert isinstance(m, keras_vae.VAE), type(m)\n"
              "np.savez(sys.argv[1], *m.get_weights())\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_ENDPOINT=fake_hub.url,
               HF_HOME=str(tmp_path / "hf_home"), TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("HF_HUB_CACHE")
    got = subprocess.run([sys.executable, "-c", script, str(tmp_path / "w.npz")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert got.returncode == 0, got.stderr[-3000:]
    with np.load(tmp_path / "w.npz") as arrays:
        loaded = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
    assert len(loaded) == len(packaged_small.get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(loaded, packaged_small.get_weights()))


# ----------------------------------------------------------------- the wheel
@pytest.mark.large
def test_wheel_ships_the_digits_presets_and_loads_one_offline(tmp_path):
    """Build the wheel, install it alone (--no-deps) into a fresh venv that borrows this
    environment's packages through a .pth file, and load kw_digits_z2 offline from outside the
    checkout; its test -ELBO matches the card within the card's standard error."""
    import sysconfig
    import venv
    import zipfile

    dist = tmp_path / "dist"
    got = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "-w", str(dist), str(REPO)], capture_output=True, text=True,
                         timeout=600, cwd=tmp_path)
    assert got.returncode == 0, got.stdout[-2000:] + got.stderr[-2000:]
    wheel = next(dist.glob("keras_vae-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for name in PACKAGED:
        for filename in ("preset.json", "config.json", "metadata.json", "model.weights.h5",
                         "README.md"):
            assert f"keras_vae/zoo/presets/{name}/{filename}" in names
    assert "keras_vae/zoo/presets/kw_mnist_z20/preset.json" in names
    assert not any(n.endswith("kw_mnist_z20/model.weights.h5") for n in names)

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True).stdout.strip()
    (Path(site) / "shared_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    got = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                          "--no-deps", "--no-index", "--ignore-installed", str(wheel)],
                         capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stdout[-2000:] + got.stderr[-2000:]
    script = """
import json, math, sys
import numpy as np
import keras_vae as kv
from sklearn.datasets import load_digits
assert kv.__file__.startswith(sys.prefix), (kv.__file__, sys.prefix)
assert kv.zoo.downloader.checkout_weights() is None
vae = kv.VAE.from_preset("kw_digits_z2")
card = kv.zoo.REGISTRY["kw_digits_z2"]["results"]
x = (load_digits().data / 16.0 > 0.5).astype("float32")[np.arange(1797) % 10 == 0]
got = kv.evaluation.elbo(vae, x, num_samples=200, seed=0, verbose=0).elbo
print(json.dumps({"neg_elbo": -float(np.mean(got)), "card": card["test_neg_elbo"],
                  "stderr": card["test_neg_elbo_stderr"]}))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", zoo.URL_ENV)}
    env.update(HF_HUB_OFFLINE="1", KERAS_VAE_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="3",
               HF_ENDPOINT="http://127.0.0.1:9", KERAS_HOME=str(tmp_path / "kh"))
    got = subprocess.run([str(python), "-c", script], capture_output=True, text=True,
                         env=env, timeout=600, cwd=tmp_path)
    assert got.returncode == 0, got.stderr[-3000:]
    result = json.loads(got.stdout.strip().splitlines()[-1])
    assert abs(result["neg_elbo"] - result["card"]) < result["stderr"], result


# ----------------------------------------------------------------- the README's zoo example
def test_readme_zoo_example_runs_offline_with_no_settings(monkeypatch, packaged_small):
    """The 'Model zoo' Python block as printed, on this checkout with no zoo variables and the
    network off: the checkout's weights/ and the packaged presets serve it."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Model zoo\n"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "from_preset(" in code
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(zoo.OFFLINE_ENV, "1")
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["vae"].latent_dim == 20 and namespace["images"].shape == (16, 784)
    assert same_weights(namespace["digits"], packaged_small)
