"""Another revision of this repository as an importable tree, for side-by-side benchmarks.

``exported(rev)`` writes ``git archive REV`` into a temporary directory and yields its path: put
it first on ``PYTHONPATH`` of a child process and that child imports REV's ``ssdinfluence``
(pure Python plus Numba kernels, so nothing needs building; Numba's cache lands in the copy).
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import tempfile
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def exported(rev: str):
    """Yield the path of a temporary copy of revision ``rev`` (any git revision name)."""
    try:
        archive = subprocess.run(["git", "archive", "--format=tar", rev], cwd=ROOT, check=True,
                                 capture_output=True).stdout
    except subprocess.CalledProcessError as error:
        raise SystemExit(f"cannot export revision {rev!r}: {error.stderr.decode().strip()}") from error
    with tempfile.TemporaryDirectory(prefix="ssdinfluence-rev-") as root:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(root, filter="data")
        yield Path(root)
