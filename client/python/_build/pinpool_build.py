"""The build backend of the pinpool package (PEP 517, in-tree: pyproject.toml's
backend-path), so that `pip install ./client/python` needs nothing from the network
and no setuptools or wheel in the environment (a fresh venv has no `wheel`).

Owns: building the wheel.  It runs `make python-lib PYLIB=<temp dir>` in the
repository this directory sits in (make builds libpinpool.so and copies it with
every shared library it needs except glibc's and the NVIDIA driver's, as `make
dist` does), then writes pinpool/*.py and those libraries into one wheel tagged
for this platform (py3-none-<platform>: the modules are pure Python, the
libraries are not).  libpinpool.so finds its neighbours through its RPATH
($ORIGIN); pinpool/_lib.py loads pinpool/libpinpool.so first after $PINPOOL_LIB.
Make's variables come from the environment as usual (BUILD, SANITIZE, CC...).
Never: builds anything itself, writes into the source tree, or builds an sdist
(the wheel needs the repository's Makefile and C sources).
"""

import base64
import hashlib
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent  # client/python/_build
PKG_ROOT = HERE.parent                  # client/python
REPO = PKG_ROOT.parent.parent
NAME = "pinpool"
SUMMARY = ("Python client of the pinpool node-local pinned-memory daemon"
           " (ctypes over libpinpool.so, which the wheel carries)")
EXTRAS = {"numpy": ["numpy"], "torch": ["torch"]}
REQUIRES_PYTHON = ">=3.8"


def _version():
    text = (PKG_ROOT / NAME / "__init__.py").read_text()
    m = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    if m is None:
        raise RuntimeError("no __version__ in pinpool/__init__.py")
    return m.group(1)


def _tag():
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    return f"py3-none-{plat}"


def _metadata(version):
    lines = ["Metadata-Version: 2.1", f"Name: {NAME}", f"Version: {version}",
             f"Summary: {SUMMARY}", f"Requires-Python: {REQUIRES_PYTHON}"]
    for extra, reqs in EXTRAS.items():
        lines.append(f"Provides-Extra: {extra}")
        lines += [f'Requires-Dist: {r}; extra == "{extra}"' for r in reqs]
    lines.append("Description-Content-Type: text/markdown")
    return "\n".join(lines) + "\n\n" + (PKG_ROOT / "README.md").read_text()


def _libraries(stage):
    """Run make in the repository; the libraries it staged in stage."""
    if not (REPO / "Makefile").is_file() or not (REPO / "client" / "pinpool.h").is_file():
        raise RuntimeError(f"pinpool's wheel is built from its repository: {PKG_ROOT} is not"
                           " client/python of a pinpool checkout")
    make = os.environ.get("MAKE", "make")
    cmd = [make, "-C", str(REPO), "--no-print-directory", "python-lib", f"PYLIB={stage}"]
    print("pinpool: " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    libs = sorted(p for p in Path(stage).iterdir() if p.is_file())
    if not any(p.name == "libpinpool.so" for p in libs):
        raise RuntimeError(f"make python-lib left no libpinpool.so in {stage}")
    return libs


def _record_line(arcname, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def _write_wheel(path, files, dist_info):
    """files: [(arcname, bytes, mode)], dist_info's own files last; adds the RECORD."""
    record = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for arcname, data, mode in files:
            info = zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
            record.append(_record_line(arcname, data))
        record.append(f"{dist_info}/RECORD,,")
        z.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")


# ---- PEP 517 hooks -------------------------------------------------------------------

def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    version = _version()
    tag = _tag()
    dist_info = f"{NAME}-{version}.dist-info"
    files = [(f"{NAME}/{p.name}", p.read_bytes(), 0o644)
             for p in sorted((PKG_ROOT / NAME).glob("*.py"))]
    with tempfile.TemporaryDirectory(prefix="pinpool-wheel-") as stage:
        files += [(f"{NAME}/{p.name}", p.read_bytes(), 0o755) for p in _libraries(stage)]
    wheel = f"Wheel-Version: 1.0\nGenerator: pinpool_build\nRoot-Is-Purelib: false\nTag: {tag}\n"
    files += [(f"{dist_info}/METADATA", _metadata(version).encode(), 0o644),
              (f"{dist_info}/WHEEL", wheel.encode(), 0o644)]
    name = f"{NAME}-{version}-{tag}.whl"
    _write_wheel(os.path.join(wheel_directory, name), files, dist_info)
    return name
