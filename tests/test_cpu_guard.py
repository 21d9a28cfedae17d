"""The CPU guard: a child process that crashes on purpose stands in for llama.cpp on a bad CPU.

The children here are real processes killed by a real SIGILL (`signal.raise_signal`), as the
first AMX instruction kills llama.cpp on a machine that advertises AMX but does not allow it.
The probe with the real weights runs in tests/test_local_model.py.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from agent import UnsupportedCPUError
from agent.models.cpu_guard import CpuGuard, reinstall_command

AMX_CPU = ["fpu", "sse4_2", "avx2", "fma", "f16c", "avx512f", "amx_tile", "amx_int8", "amx_bf16"]
PLAIN_CPU = ["fpu", "sse4_2", "avx2", "fma", "f16c"]

# The stand-in child: records how it was asked to run, then dies the way llama.cpp would.
CHILD = """\
import signal, sys
model, _, mode = sys.argv[1:4]
with open({log!r}, "a") as log:
    log.write(mode + "\\n")
if {crash_when!r} == "always" or mode == {crash_when!r}:
    signal.raise_signal(signal.SIGILL)
sys.exit({exit_code})
"""


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    return path


def guard(
    tmp_path: Path, flags: list[str], *, crash_when: str = "never", exit_code: int = 0
) -> CpuGuard:
    log = tmp_path / "probes.log"
    code = CHILD.format(log=str(log), crash_when=crash_when, exit_code=exit_code)
    return CpuGuard(
        cache_dir=tmp_path / "cache", flags=flags, probe_command=[sys.executable, "-c", code]
    )


def probes(tmp_path: Path) -> list[str]:
    log = tmp_path / "probes.log"
    return log.read_text().split() if log.exists() else []


def test_amx_that_traps_turns_extra_buffer_types_off_once_per_machine(
    tmp_path: Path, model: Path
) -> None:
    verdict = guard(tmp_path, AMX_CPU, crash_when="on").check(model)

    assert verdict.extra_buffer_types is False
    assert "advertises AMX" in verdict.reason and "SIGILL" in verdict.reason
    assert probes(tmp_path) == ["on", "off"]
    # A new process (a new guard) on the same machine, build and model reads the cached verdict.
    again = guard(tmp_path, AMX_CPU, crash_when="always").check(model)
    assert again == verdict
    assert probes(tmp_path) == ["on", "off"]


def test_a_crash_without_amx_blames_the_extra_kernels(tmp_path: Path, model: Path) -> None:
    verdict = guard(tmp_path, PLAIN_CPU, crash_when="on").check(model)
    assert verdict.extra_buffer_types is False
    assert "extra buffer-type kernels crash" in verdict.reason


def test_a_build_that_crashes_either_way_is_a_typed_error_naming_the_rebuild(
    tmp_path: Path, model: Path
) -> None:
    with pytest.raises(UnsupportedCPUError) as caught:
        guard(tmp_path, AMX_CPU, crash_when="always").check(model)

    message = str(caught.value)
    assert "SIGILL" in message
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF"' in message
    assert "pip install --force-reinstall --no-cache-dir" in message
    assert probes(tmp_path) == ["on", "off"]
    # Nothing is cached: after the rebuild the guard probes again.
    assert not list((tmp_path / "cache").glob("*.json"))


def test_a_healthy_cpu_probes_once_and_again_on_another_cpu(tmp_path: Path, model: Path) -> None:
    first = guard(tmp_path, PLAIN_CPU).check(model)
    assert first.extra_buffer_types is True
    assert guard(tmp_path, PLAIN_CPU).check(model) == first
    assert probes(tmp_path) == ["on"]

    other = guard(tmp_path, AMX_CPU).check(model)
    assert other.key != first.key
    assert probes(tmp_path) == ["on", "on"]


def test_the_verdict_is_kept_in_memory_for_the_process(tmp_path: Path, model: Path) -> None:
    probe = guard(tmp_path, PLAIN_CPU)
    probe.check(model)
    for cached in (tmp_path / "cache").glob("*.json"):
        cached.unlink()
    probe.check(model)
    assert probes(tmp_path) == ["on"]


def test_a_probe_that_fails_without_a_signal_is_not_a_cpu_verdict(
    tmp_path: Path, model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.models.cpu_guard"):
        verdict = guard(tmp_path, PLAIN_CPU, exit_code=3).check(model)
    # The in-process load reports the real problem (an unreadable model, say) itself.
    assert verdict.extra_buffer_types is True
    assert "did not finish" in verdict.reason
    assert "the CPU probe did not finish" in caplog.text
    assert not list((tmp_path / "cache").glob("*.json"))


def test_a_probe_that_hangs_is_stopped(tmp_path: Path, model: Path) -> None:
    hanging = CpuGuard(
        cache_dir=tmp_path / "cache",
        flags=PLAIN_CPU,
        probe_command=[sys.executable, "-c", "import time; time.sleep(60)"],
        timeout=0.5,
    )
    assert "no answer within" in hanging.check(model).reason


def test_the_rebuild_drops_avx2_for_a_cpu_without_it() -> None:
    assert "-DGGML_AVX2=OFF" not in reinstall_command(PLAIN_CPU)
    assert "-DGGML_AVX2=OFF" in reinstall_command(["fpu", "sse4_2"])
    assert "llama-cpp-python==" in reinstall_command(PLAIN_CPU)
