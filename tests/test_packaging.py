"""The wheel, installed into a clean virtualenv, has everything: a packaging mistake cannot hide
behind the editable install the other tests use."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_installs_and_runs(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("qwenloop-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "agent/_templates/default.j2" in names
    assert "agent/_templates/search_bot.j2" in names
    assert "tools/calculator.py" in names and "agent/py.typed" in names
    assert "agent/serve_page.html" in names  # the chat page of `qwenloop serve`
    assert not any(n.startswith("tests/") for n in names)

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    help_text = subprocess.run(
        [str(env_dir / "bin" / "qwenloop"), "--help"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    ).stdout
    assert "run" in help_text and "tools" in help_text
    # shipped templates render from inside the installed wheel, away from the checkout
    rendered = subprocess.run(
        [str(py), "-c", "from agent import Template; print(Template(name='search_bot').render())"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    ).stdout
    assert "cite your sources" in rendered
