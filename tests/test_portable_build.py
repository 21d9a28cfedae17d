"""The installed llama.cpp build is portable: no AMX and no AVX-512 instructions anywhere in it.

`make` builds llama-cpp-python with GGML_NATIVE=OFF for an x86-64-v3 baseline (see the Makefile),
so the libraries must not contain an instruction that a CPU of that baseline, or a virtual
machine that hides AMX, cannot execute. Checked by construction: llama.cpp's own feature report,
and a disassembly of every shared library it ships.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="x86-64 build flags")

# AMX: tile configuration, loads/stores and dot products; AVX-512: any zmm or mask register use.
AMX = re.compile(r"\s(ldtilecfg|sttilecfg|tilerelease|tilezero|tileloadd\w*|tilestored|tdp\w+)\s")
AVX512 = re.compile(r"%zmm\d+|%k[1-7]\b")


def libraries() -> list[Path]:
    found = sorted((Path(llama_cpp.__file__).parent / "lib").glob("*.so*"))
    assert found, "llama_cpp/lib holds no shared libraries"
    return found


def test_llama_cpp_reports_no_amx_and_no_avx512() -> None:
    report = llama_cpp.llama_print_system_info().decode()
    assert "AVX2 = 1" in report, report
    for feature in ("AMX_INT8", "AVX512", "AVX512_VNNI", "AVX512_BF16", "AVX_VNNI"):
        assert f"{feature} = 1" not in report, report


@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) is not installed")
def test_no_library_contains_an_amx_or_avx512_instruction() -> None:
    for library in libraries():
        listing = subprocess.run(
            ["objdump", "-d", "--no-show-raw-insn", str(library)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert len(listing) > 1000, f"objdump read nothing from {library}"
        amx = AMX.search(listing)
        assert amx is None, f"{library.name} contains the AMX instruction {amx.group(1)!r}"
        wide = AVX512.search(listing)
        assert wide is None, f"{library.name} uses the AVX-512 register {wide.group(0)!r}"
