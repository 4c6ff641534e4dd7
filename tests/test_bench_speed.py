"""bench/speed.py's choice of the bfloat16 rows (the bench itself runs for half an hour: not a unit test)."""

from pathlib import Path

import pytest
from conftest import load_bench


@pytest.fixture(scope="module")
def speed():
    return load_bench("speed")


AVX2 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n"
AVX512 = "flags\t\t: fpu avx2 avx512f avx512_vnni\n"
BF16 = "flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16\n"
AMX = "flags\t\t: fpu avx2 avx512f amx_tile amx_bf16 amx_int8\n"


@pytest.mark.parametrize("text, expected", [(AVX2, False), (AVX512, False), (BF16, True), (AMX, True),
                                            ("", False), ("model name\t: some ARM core\n", False)])
def test_native_bf16_reads_the_cpu_flags(speed, text, expected):
    assert speed.native_bf16(text) is expected


def test_native_bf16_reads_this_machines_cpuinfo(speed):
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    assert speed.native_bf16() is speed.native_bf16(text)
