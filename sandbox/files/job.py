"""Sandbox only: a stand-in for a training job. It burns a little CPU, holds some memory and writes a little."""

import os
import tempfile
import time

ballast = bytearray(48 * 1024 * 1024)  # resident memory the job-exporter reports
with tempfile.TemporaryFile(dir="/var/tmp") as scratch:
    while True:
        sum(range(30000))
        scratch.write(os.urandom(4096))
        scratch.flush()
        os.fsync(scratch.fileno())
        scratch.seek(0)
        time.sleep(0.2)
