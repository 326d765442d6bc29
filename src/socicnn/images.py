"""Offline grayscale images: patches of the images bundled with scikit-image, and Olivetti faces
from a local file.

Nothing here downloads. :func:`image_patches` reads the image files that ship inside the
scikit-image package (its ``data`` directory) and cuts ``size x size`` patches; each split draws
from its own source images, so no source image is shared between train, validation and test.
:func:`load_olivetti` reads the Olivetti faces (400 images of 64 x 64) from a local file and
says how to obtain it when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["SPLITS", "image_patches", "load_olivetti", "source_image"]

#: Source images (files bundled with scikit-image) of each split; no file is in two splits.
SPLITS = {
    "train": (
        "camera.png",
        "brick.png",
        "grass.png",
        "gravel.png",
        "moon.png",
        "astronaut.png",
        "coffee.png",
        "rocket.jpg",
        "hubble_deep_field.jpg",
        "motorcycle_left.png",
    ),
    "val": ("coins.png", "page.png", "chelsea.png", "cell.png"),
    "test": ("text.png", "clock_motion.png", "retina.jpg", "ihc.png"),
}


def _skimage():
    try:
        import skimage.color
        import skimage.data
        import skimage.io
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "the bundled images need scikit-image: pip install scikit-image "
            "(or the book extra, pip install -e '.[book]' in a checkout)"
        ) from exc
    return skimage


def source_image(name: str) -> np.ndarray:
    """One image file bundled with scikit-image as grayscale float64 in ``[0, 1]``, read from the
    package's own data directory (never fetched)."""
    sk = _skimage()
    path = Path(sk.data.__file__).parent / name
    if not path.is_file():
        raise FileNotFoundError(f"{name} is not bundled with this scikit-image ({path}); pick another image")
    img = np.asarray(sk.io.imread(path))
    if img.ndim == 3:
        img = sk.color.rgb2gray(img[..., :3])
    img = img.astype(np.float64)
    if img.max() > 1.0:
        img = img / 255.0
    return np.clip(img, 0.0, 1.0)


def image_patches(split: str, n: int, size: int = 64, *, seed: int = 0, crop: int | None = None) -> np.ndarray:
    """``n`` patches ``(n, size, size)`` in ``[0, 1]`` from the source images of ``split``.

    Each patch is a ``crop x crop`` window at a random position of a source image downsampled by
    2 (sources larger than 256 pixels a side), block-averaged to ``size x size`` when ``size <
    crop`` (``crop`` a multiple of ``size``). Patches cycle through the split's sources, so each
    contributes about ``n / len(sources)``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    crop = size * max(1, 64 // size) if crop is None else crop
    if crop % size:
        raise ValueError(f"crop ({crop}) must be a multiple of size ({size})")
    rng = np.random.default_rng([seed, list(SPLITS).index(split)])
    sources = []
    for name in SPLITS[split]:
        img = source_image(name)
        if min(img.shape) > 256:
            h, w = (img.shape[0] // 2) * 2, (img.shape[1] // 2) * 2
            img = img[:h, :w].reshape(h // 2, 2, w // 2, 2).mean((1, 3))
        sources.append(img)
    out = np.empty((n, size, size))
    f = crop // size
    for i in range(n):
        img = sources[i % len(sources)]
        y = rng.integers(0, img.shape[0] - crop + 1)
        x = rng.integers(0, img.shape[1] - crop + 1)
        patch = img[y : y + crop, x : x + crop]
        out[i] = patch.reshape(size, f, size, f).mean((1, 3))
    return out


def load_olivetti(path: str | os.PathLike | None = None) -> np.ndarray:
    """The Olivetti faces ``(400, 64, 64)`` in ``[0, 1]`` from a local file (never downloaded).

    ``path`` (or the environment variable ``SOCICNN_OLIVETTI``) may name a ``.npy`` file holding
    that array, or scikit-learn's cache ``olivetti.pkz``; by default scikit-learn's cache
    ``~/scikit_learn_data/olivetti.pkz`` is tried.
    """
    candidates = (
        [path or os.environ.get("SOCICNN_OLIVETTI")]
        if (path or os.environ.get("SOCICNN_OLIVETTI"))
        else [
            Path.home() / "scikit_learn_data" / "olivetti.pkz",
            Path.home() / "scikit_learn_data" / "olivetti_py3.pkz",
        ]
    )
    for p in map(Path, candidates):
        if p.is_file():
            if p.suffix == ".npy":
                faces = np.load(p)
            else:
                try:
                    import joblib
                except ImportError as exc:
                    raise ImportError(
                        f"reading {p} needs joblib (pip install joblib), or save the array as .npy"
                    ) from exc
                faces = joblib.load(p)
            faces = np.asarray(faces, dtype=np.float64).reshape(-1, 64, 64)
            if faces.shape[0] != 400:
                raise ValueError(f"{p} holds {faces.shape[0]} images, expected the 400 Olivetti faces")
            return faces
    raise FileNotFoundError(
        "the Olivetti faces are not on this machine (looked for "
        + ", ".join(str(c) for c in candidates)
        + "). They are not downloaded at run time. To obtain them, on a machine with internet run "
        '`python -c "from sklearn.datasets import fetch_olivetti_faces; fetch_olivetti_faces()"` '
        "(it writes ~/scikit_learn_data/olivetti.pkz), or save the (400, 64, 64) array as a .npy "
        "file, then pass its path or set SOCICNN_OLIVETTI"
    )
