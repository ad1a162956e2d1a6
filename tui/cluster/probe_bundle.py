"""The probe sent over SSH: detect/ zipped in memory, and the few lines of Python that unpack and
run it on the far side (detect/probe.py), so that a server needs only python3 to be detected.

The bundle is extracted to a temporary directory rather than imported from the zip: detect/
reads its bundled files (profiles, amdgpu.ids) by path, which zipimport cannot serve.
"""

from __future__ import annotations

import io
import zipfile
from functools import lru_cache
from pathlib import Path

# Runs under the far side's `python3 -I -c` (isolated: its PYTHONPATH and user site cannot put
# another llama_wizard first) with the zip on stdin and the tool timeout as its argument. It
# checks the version first: detect/ needs 3.10, and an old python would otherwise fail with a
# SyntaxError nobody can act on.
BOOTSTRAP = """\
import io, shutil, sys, tempfile, zipfile
if sys.version_info < (3, 10):
    sys.stderr.write("llama-wizard probe: needs Python 3.10 or newer; python3 here is %s\\n"
                     % sys.version.split()[0])
    sys.exit(3)
data = sys.stdin.buffer.read()
where = tempfile.mkdtemp(prefix="llama-wizard-probe-")
try:
    zipfile.ZipFile(io.BytesIO(data)).extractall(where)
    sys.path.insert(0, where)
    from llama_wizard.detect.probe import main
    code = main(sys.argv[1:])
finally:
    shutil.rmtree(where, ignore_errors=True)
sys.exit(code)
"""

# What of detect/ the probe needs besides its modules: the hardware profiles (with their
# recorded tool outputs) for LLAMA_WIZARD_SIMULATE, and the device name tables.
_DATA_PATTERNS = ("profiles/*.json", "profiles/outputs/*", "data/*")


def _detect_dir() -> Path:
    from llama_wizard import detect

    return Path(detect.__file__).resolve().parent


@lru_cache(maxsize=1)
def probe_bundle() -> bytes:
    """The zip: `llama_wizard/__init__.py` (empty: a regular package, so it wins over any
    llama_wizard installed there) and `llama_wizard/detect/` as installed here."""
    source = _detect_dir()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("llama_wizard/__init__.py", "")
        files = sorted(source.glob("*.py"))
        for pattern in _DATA_PATTERNS:
            files += sorted(p for p in source.glob(pattern) if p.is_file())
        for path in files:
            bundle.write(path, f"llama_wizard/detect/{path.relative_to(source).as_posix()}")
    return buffer.getvalue()


def probe_argv(python: str = "python3", timeout: float | None = None) -> list[str]:
    """The command that runs the bundle given on its stdin: `python3 -I -c BOOTSTRAP [TIMEOUT]`."""
    argv = [python, "-I", "-c", BOOTSTRAP]
    if timeout is not None:
        argv.append(f"{timeout:g}")
    return argv
