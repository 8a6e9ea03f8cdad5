"""glibc malloc's thresholds fixed at start (pipeline.allocator): freed activation buffers are reused, not
handed back to the system and faulted in again."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")

FAULTS_OF_REUSE = """
import resource, sys
from pipeline.allocator import keep_freed_memory
kept = keep_freed_memory()
buffer = bytearray(64 << 20); del buffer  # 64 MiB, above glibc's largest dynamic threshold
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    buffer = bytearray(64 << 20); del buffer
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults_of_reuse(**env: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", FAULTS_OF_REUSE],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0], int(out[1])


def test_a_freed_buffer_is_reused_without_faulting_its_pages_in_again():
    kept, faults = faults_of_reuse()
    left, default_faults = faults_of_reuse(LD_PRELOAD="")  # an allocator setting of the user's: left alone
    assert (kept, left) == ("True", "False")
    assert faults * 10 < default_faults, (faults, default_faults)
