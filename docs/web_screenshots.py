"""The README's screenshots of the exported web page (docs/images/web-*.png).

    python docs/web_screenshots.py     # needs Chromium and onnxruntime-web (see the README)

Exports kw_mnist_z2 and conv_mnist_z16 from weights/ with formats=("web",), adds the zoo's
facts to the page's model card, opens the page in headless Chromium with the first test image
of ../shared/datasets/binarized_mnist.npz as the drawn input (a model sample where that file is
absent) and writes a 32-colour PNG of the page.
"""

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402


def main():
    from PIL import Image

    import keras_vae as kv
    from keras_vae import web
    from keras_vae.web import browser

    data = REPO.parent / "shared" / "datasets" / "binarized_mnist.npz"
    rows = {row["name"]: row for row in kv.zoo.list()}
    for name, height in (("kw_mnist_z2", 1720), ("conv_mnist_z16", 1020)):
        vae = kv.zoo.load(name, base_url=str(REPO / "weights"), verbose=False)
        row = rows[name]
        card = {"data": row["dataset"], "test NLL (nats)": row["test_nll"],
                "test -ELBO (nats)": row["test_neg_elbo"], "architecture": row["architecture"]}
        if data.is_file():
            with np.load(data) as archive:
                x = archive["test"][0].reshape(vae.input_shape_)
        else:
            x = (vae.decoder(np.zeros((1, vae.latent_dim), "float32")).numpy()[0] > 0)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / name
            kv.export(vae, folder, formats=("web",))
            web.write_web_app(vae, folder, card=card)
            with browser.serve(folder) as (base, _):
                shot = Path(tmp) / "shot.png"
                browser.screenshot(f"{base}index.html?latency=0&x={web.encode_input(x)}", shot,
                                   width=1100, height=height)
            image = Image.open(shot).convert("RGB").quantize(colors=32)
            out = REPO / "docs" / "images" / f"web-{name.replace('_', '-')}.png"
            image.save(out, optimize=True)
            print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
