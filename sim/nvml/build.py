"""Build the simulated NVML library (a stand-in for GPUs we do not have) with the system C compiler.

``build()`` compiles ``nvml_sim.c`` into ``sim/nvml/build/lib/libnvidia-ml.so.1`` when the source is newer than the
library, and returns the directory to put on ``LD_LIBRARY_PATH``. Run ``python sim/nvml/build.py`` to build by hand;
it prints that directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "nvml_sim.c"
DEFAULT_OUT = HERE / "build" / "lib"
LIBRARY_NAME = "libnvidia-ml.so.1"
COMPILE_TIMEOUT_SECONDS = 120
CFLAGS = ("-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden", "-pthread")


def build(out_dir: Path = DEFAULT_OUT) -> Path:
    """Compile the library into ``out_dir`` if it is missing or older than the source; return ``out_dir``."""
    target = out_dir / LIBRARY_NAME
    if target.exists() and target.stat().st_mtime >= SOURCE.stat().st_mtime:
        return out_dir
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler found (install gcc) to build the simulated NVML library")
    out_dir.mkdir(parents=True, exist_ok=True)
    # Compile to a temporary name and rename, so that concurrent builds never expose a half-written library.
    fd, tmp_name = tempfile.mkstemp(prefix=".libnvidia-ml.", suffix=".so", dir=out_dir)
    os.close(fd)
    try:
        subprocess.run(
            [compiler, *CFLAGS, "-Wl,-soname," + LIBRARY_NAME, "-o", tmp_name, str(SOURCE)],
            check=True,
            timeout=COMPILE_TIMEOUT_SECONDS,
        )
        Path(tmp_name).replace(target)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return out_dir


if __name__ == "__main__":
    sys.stdout.write(f"{build()}\n")
