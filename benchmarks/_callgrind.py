"""CPU instructions of a Python snippet under callgrind: a count a busy machine does not disturb.

Wall-clock figures on a shared virtual machine move by a factor of two from
one minute to the next; instruction counts are repeatable to about 0.1% once
what varies between identical runs is pinned: hash randomisation
(``PYTHONHASHSEED``), address-space randomisation (``setarch -R``) and the
thread pools of numerical libraries (one thread each).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys


def available() -> bool:
    return shutil.which("valgrind") is not None


def instructions(code: str, *args: str) -> int:
    """Instructions executed by ``python -c code args...`` (start-up and imports included)."""
    one_thread = dict.fromkeys(("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"), "1")
    env = os.environ | one_thread | {"PYTHONHASHSEED": "0"}
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-c", code, *args]
    if shutil.which("setarch"):
        command = ["setarch", platform.machine(), "-R", *command]
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return int(re.search(r"refs:\s*([\d,]+)", out.stderr).group(1).replace(",", ""))
