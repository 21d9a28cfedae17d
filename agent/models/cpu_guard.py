"""Will llama.cpp run on this CPU? A probe in a child process, once per machine, build and model.

llama.cpp can execute an instruction that the CPU advertises but the machine does not allow: AMX
tile instructions on a virtual machine that never enabled the tile registers, or AVX-512 in a
wheel compiled natively on another CPU. Such an instruction kills the process with SIGILL, which
no Python code can catch. So before the first decode in a process the local backend asks this
module: a child process loads the model and decodes a few tokens. If the child dies, a second
child tries again without llama.cpp's extra buffer types (the AMX and weight-repacking kernels).
The verdict is cached under the model cache (`cpu-probe/`), keyed by the CPU's flags, the
llama.cpp build's files and the model file, so the probe runs once, not once per process.

Run as a module, this file is the child: `python -m agent.models.cpu_guard MODEL --extra-buffer-
types on|off` exits 0 after a successful decode.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.errors import UnsupportedCPUError

__all__ = ["CpuGuard", "CpuVerdict", "cpu_flags", "reinstall_command"]

logger = logging.getLogger(__name__)

_PROBE_TEXT = "The quick brown fox jumps over the lazy dog. One, two, three,"
_LLAMA_DIST = "llama-cpp-python"


@dataclass(frozen=True, slots=True)
class CpuVerdict:
    """What the probe found.

    Attributes:
        extra_buffer_types: Whether llama.cpp may use its extra buffer types (AMX, repacked
            weights). False when they crashed the probe and plain kernels did not.
        reason: One sentence on how the verdict was reached.
        key: The cache key: CPU flags, llama.cpp build and model file, hashed.
    """

    extra_buffer_types: bool
    reason: str
    key: str


@dataclass(frozen=True, slots=True)
class _ProbeRun:
    ok: bool
    signal_name: str | None  # set when the child was killed by a signal
    detail: str  # the end of the child's stderr, or why it did not finish


class CpuGuard:
    """Decides, once per CPU, llama.cpp build and model, how llama.cpp may run here.

    Args:
        cache_dir: Where verdicts are kept; defaults to `cpu-probe/` in the model cache
            (`$QWENLOOP_CACHE`, else `~/.cache/qwenloop`).
        flags: The CPU's feature flags; defaults to this machine's (`/proc/cpuinfo`).
        probe_command: The child to run, before its arguments `MODEL --extra-buffer-types
            on|off`; defaults to this module run by the current interpreter.
        timeout: Seconds a probe may take before it counts as failed.
    """

    def __init__(
        self,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        flags: Sequence[str] | None = None,
        probe_command: Sequence[str] | None = None,
        timeout: float = 300.0,
    ) -> None:
        if cache_dir is None:
            from agent.models.weights import default_cache_dir

            cache_dir = default_cache_dir() / "cpu-probe"
        self.cache_dir = Path(cache_dir)
        self.flags = frozenset(cpu_flags() if flags is None else flags)
        self.probe_command = list(probe_command or [sys.executable, "-m", __name__])
        self.timeout = timeout
        self._verdicts: dict[str, CpuVerdict] = {}
        self._lock = threading.Lock()

    def check(self, model_path: str | os.PathLike[str]) -> CpuVerdict:
        """Return how llama.cpp may run this model here, probing in a child if not yet known.

        Raises:
            UnsupportedCPUError: Even plain kernels crash: the installed llama.cpp build uses
                instructions this machine cannot execute. The message names the reinstall.
        """
        path = Path(model_path)
        key = self._key(path)
        with self._lock:
            verdict = self._verdicts.get(key) or self._load(key)
            if verdict is None:
                verdict = self._probe_both(path, key)
                self._save(verdict)
            self._verdicts[key] = verdict
            return verdict

    # -- probing ---------------------------------------------------------------------------

    def _probe_both(self, path: Path, key: str) -> CpuVerdict:
        started = time.perf_counter()
        first = self._run(path, extra_buffer_types=True)
        if first.ok:
            return CpuVerdict(True, "a test decode with every kernel succeeded", key)
        if first.signal_name is None:
            # Not a CPU fault (a model llama.cpp cannot read, say): the in-process load will
            # report it with its own message. Nothing is cached.
            logger.warning("the CPU probe did not finish: %s", first.detail)
            return CpuVerdict(True, f"the probe did not finish ({first.detail})", "")
        second = self._run(path, extra_buffer_types=False)
        logger.warning(
            "llama.cpp crashed with %s in a test decode; retried without extra buffer types: %s "
            "(%.1f s)",
            first.signal_name,
            "ok" if second.ok else f"crashed again ({second.signal_name or second.detail})",
            time.perf_counter() - started,
        )
        if second.ok:
            cause = (
                "the CPU advertises AMX but this machine does not let a process use it"
                if "amx_tile" in self.flags
                else "llama.cpp's extra buffer-type kernels crash on this machine"
            )
            return CpuVerdict(
                False, f"{cause} ({first.signal_name}); extra buffer types are off", key
            )
        raise UnsupportedCPUError(
            f"llama.cpp crashes on this CPU ({first.signal_name} in a test decode, with and "
            "without extra buffer types): the installed llama-cpp-python was built for another "
            f"CPU. Rebuild it for a portable baseline: {reinstall_command(self.flags)}"
        )

    def _run(self, path: Path, *, extra_buffer_types: bool) -> _ProbeRun:
        command = [
            *self.probe_command,
            str(path),
            "--extra-buffer-types",
            "on" if extra_buffer_types else "off",
        ]
        with tempfile.TemporaryFile() as stderr:
            try:
                completed = subprocess.run(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    timeout=self.timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                return _ProbeRun(False, None, f"no answer within {self.timeout:.0f} s")
            except OSError as exc:
                return _ProbeRun(False, None, f"could not start {command[0]}: {exc}")
            stderr.seek(0)
            tail = stderr.read()[-2000:].decode("utf-8", "replace").strip()
        code = completed.returncode
        if code == 0:
            return _ProbeRun(True, None, "")
        if code < 0:
            return _ProbeRun(False, _signal_name(-code), tail)
        return _ProbeRun(False, None, tail.splitlines()[-1] if tail else f"exit status {code}")

    # -- the cache -------------------------------------------------------------------------

    def _key(self, model_path: Path) -> str:
        digest = hashlib.sha256()
        digest.update(" ".join(sorted(self.flags)).encode())
        digest.update(platform.machine().encode())
        for part in _build_identity():
            digest.update(part.encode())
        with contextlib.suppress(OSError):
            stat = model_path.stat()
            digest.update(f"{model_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        return digest.hexdigest()[:32]

    def _load(self, key: str) -> CpuVerdict | None:
        try:
            data = json.loads((self.cache_dir / f"{key}.json").read_text("utf-8"))
            return CpuVerdict(bool(data["extra_buffer_types"]), str(data["reason"]), key)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _save(self, verdict: CpuVerdict) -> None:
        if not verdict.key:
            return
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                "w", dir=self.cache_dir, suffix=".tmp", delete=False, encoding="utf-8"
            ) as handle:
                json.dump({**asdict(verdict), "checked_at": time.time()}, handle)
            os.replace(handle.name, self.cache_dir / f"{verdict.key}.json")
        except OSError as exc:  # a read-only cache only costs a probe per process
            logger.warning("could not cache the CPU probe's verdict: %s", exc)


def cpu_flags() -> list[str]:
    """Return this CPU's feature flags as the kernel reports them (empty where unknown)."""
    with (
        contextlib.suppress(OSError),
        open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo,
    ):
        for line in cpuinfo:
            name, _, value = line.partition(":")
            if name.strip() in ("flags", "Features"):
                return value.split()
    return []


def reinstall_command(flags: frozenset[str] | Sequence[str] = ()) -> str:
    """Return the command that rebuilds llama-cpp-python without CPU-specific instructions."""
    args = "-DGGML_NATIVE=OFF"
    if "avx2" not in flags:
        # Older than x86-64-v3 (or not x86 at all): no vector baseline beyond SSE4.2.
        args += " -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF"
    try:
        version = f"=={importlib.metadata.version(_LLAMA_DIST)}"
    except importlib.metadata.PackageNotFoundError:
        version = ""
    return (
        f'CMAKE_ARGS="{args}" pip install --force-reinstall --no-cache-dir --no-deps '
        f"'{_LLAMA_DIST}{version}'"
    )


def _build_identity() -> Iterator[str]:
    """Yield what identifies the installed llama.cpp build: version and its libraries' files."""
    try:
        yield importlib.metadata.version(_LLAMA_DIST)
    except importlib.metadata.PackageNotFoundError:
        yield "llama-cpp-python not installed"
    try:
        spec = importlib.util.find_spec("llama_cpp")
    except (ImportError, ValueError):  # a stand-in module without a spec
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        libraries = Path(location) / "lib"
        with contextlib.suppress(OSError):
            for library in sorted(libraries.iterdir()):
                stat = library.stat()
                yield f"{library.name}:{stat.st_size}:{stat.st_mtime_ns}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# -- the child ---------------------------------------------------------------------------------


def _probe(model: str, extra_buffer_types: bool) -> None:
    """Load the model and decode a few tokens, as the local backend will (the child's work)."""
    import llama_cpp

    from agent.models.llama_runner import open_llama

    llama = open_llama(
        llama_cpp,
        model,
        extra_buffer_types=extra_buffer_types,
        n_ctx=128,
        n_batch=128,
        n_threads=max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1),
        verbose=False,
    )
    tokens = llama.tokenize(_PROBE_TEXT.encode(), add_bos=False, special=False)
    llama.eval(tokens)  # a batch: matrix-matrix kernels
    for count, _token in enumerate(llama.generate([], temp=0.0, reset=False)):  # matrix-vector
        if count >= 2:
            break
    llama.close()


def main(argv: list[str] | None = None) -> int:
    """Run the probe (the child's entry point); exit 0 when the decode succeeded."""
    parser = argparse.ArgumentParser(description="Test-decode a GGUF model with llama.cpp.")
    parser.add_argument("model")
    parser.add_argument("--extra-buffer-types", choices=("on", "off"), default="on")
    args: Any = parser.parse_args(argv)
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource  # a crash here must not leave a core file the size of the model

        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    _probe(args.model, args.extra_buffer_types == "on")
    return 0


if __name__ == "__main__":
    sys.exit(main())
