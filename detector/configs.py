"""Where the shipped configuration files are: model presets, open_clip model configs, thresholds.

The files live in one place, the top-level ``configs/`` folder of the source tree
(``configs/models``, ``configs/open_clip``, ``configs/thresholds``). ``pyproject.toml`` maps
the package ``detector._configs`` onto that folder, so a wheel ships them as package data in
``detector/_configs/``. :func:`configs_root` finds them through :mod:`importlib.resources`:

* installed from a wheel: ``<site-packages>/detector/_configs``;
* source tree and editable install (``pip install -e .``; ``detector`` is then imported from
  the checkout, which has no ``detector/_configs``): ``<checkout>/configs``.

Pip always unpacks wheels, so the shipped folder is a real directory and the root is a
:class:`pathlib.Path`: preset files name their open_clip model configs by relative path
(``"../open_clip/…json"``) and open_clip reads those by file name.

This module never imports torch.

Example:
    >>> from detector.configs import configs_root
    >>> (configs_root() / "models" / "tiny-clip-test.json").is_file()
    True
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# The folder of package ``detector`` a wheel installs the configs into (see pyproject.toml).
SHIPPED_DIR = "_configs"
# The checkout's configs folder: the single source of the shipped files.
SOURCE_DIR = Path(__file__).resolve().parent.parent / "configs"


def configs_root() -> Path:
    """The folder holding ``models/``, ``open_clip/`` and ``thresholds/``.

    The installed package data when present (wheel installs), else the source tree's
    ``configs/`` (checkout, editable install). The result may not exist (a package imported
    from a zip file), in which case no built-in presets or thresholds are found.
    """
    shipped = resources.files(__package__ or "detector").joinpath(SHIPPED_DIR)
    if isinstance(shipped, Path) and shipped.is_dir():
        return shipped
    return SOURCE_DIR
