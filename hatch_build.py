"""Hatch build hook: compile the project's two small C extensions.

* ``rymi_codecs._fir``, the resampler's inner loop;
* ``gateway.server._mask``, RFC 6455 unmasking for the carrier socket's frame parser.

Both are optional: ``rymi_codecs.resample`` falls back to its numpy path and
``gateway.server.ws_frames`` to a Python XOR, with the same bytes, when one is missing. So
a failed compilation (no C compiler, no Python headers) warns and lets the build go on;
``tests/codecs/test_resample_accel.py`` and ``tests/server/test_ws_frames.py`` are what
refuse a test environment without them.

* Editable installs (``pip install -e .``, as ``scripts/test`` does) build the module in
  place, next to its source in ``codecs/rymi_codecs/`` (ignored by git), because the
  editable wheel only puts ``codecs/`` on ``sys.path``.
* Regular wheels build it in a temporary folder and force-include it; the wheel is then
  tagged for this interpreter and platform instead of ``py3-none-any``.

Flags: ``-O3`` and nothing tied to the build machine (no ``-march=native``): the kernel's
SIMD is x86-64's baseline SSE2, so the wheel runs on any x86-64. ``CC`` overrides the
compiler, as for setuptools.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

EXTENSIONS = (
    # (C source, the module's folder inside the wheel, what runs without it)
    (Path("codecs/rymi_codecs/_fir.c"), "rymi_codecs", "the numpy resampler (3-4x the CPU)"),
    (Path("gateway/server/_mask.c"), "gateway/server", "a Python XOR (~5x the CPU)"),
)
CFLAGS = ["-O3", "-fPIC", "-fvisibility=hidden", "-Wall"]
INSTALL_HINT = "sudo apt-get install gcc python3-dev"


class CompileError(Exception):
    """The extension could not be built; the message says why and what to install."""


class CompileFir(BuildHookInterface):
    """Builds the :data:`EXTENSIONS` for the wheel target (standard and editable)."""

    _tmp: str | None = None
    """Folder of a standard build's module, removed once the wheel is written."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        if version != "editable":
            self._tmp = tempfile.mkdtemp(prefix="rymi-ext-")
        for source, package, fallback in EXTENSIONS:
            name = source.stem + str(sysconfig.get_config_var("EXT_SUFFIX") or ".so")
            folder = root / source.parent if self._tmp is None else Path(self._tmp)
            target = folder / name
            module = f"{package.replace('/', '.')}.{source.stem}"
            try:
                command = compile_extension(root / source, target)
            except CompileError as exc:
                self.app.display_warning(
                    f"{module} was not built: {exc}. {fallback} runs instead, with the same "
                    f"output. To build it: {INSTALL_HINT}, then reinstall."
                )
                continue
            self.app.display_info(f"built {module}: {shlex.join(command)}")
            if self._tmp is not None:
                build_data["force_include"][str(target)] = f"{package}/{name}"
                build_data["pure_python"] = False
                build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


def compiler() -> list[str]:
    """The C compiler command: ``$CC``, else the one Python was built with, else ``cc``."""
    for candidate in (os.environ.get("CC"), sysconfig.get_config_var("CC"), "cc"):
        command = shlex.split(candidate or "")
        if command and shutil.which(command[0]):
            return command
    raise CompileError(f"no C compiler found ($CC, {sysconfig.get_config_var('CC')!r}, cc)")


def compile_extension(source: Path, target: Path) -> list[str]:
    """Compile ``source`` into the extension module ``target``; return the command used.

    The module is written next to ``target`` first and renamed over it, so that a process
    that has the old one loaded keeps a valid file, and a failure leaves no stale module
    behind (an old build would otherwise go on being imported with a newer source).

    Raises:
        CompileError: no compiler, no Python headers, or the compiler failed.
    """
    target.unlink(missing_ok=True)
    if sys.platform == "win32":
        raise CompileError("the build hook compiles with a Unix C compiler only")
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").is_file():
        raise CompileError(f"Python.h not found in {include}")
    partial = target.with_name(target.name + ".partial")
    command = [*compiler(), *CFLAGS, "-shared", "-I", include, str(source), "-o", str(partial)]
    if sys.platform == "darwin":
        command += ["-undefined", "dynamic_lookup"]
    # The command is built from the configured compiler and fixed flags, not from input.
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        output = (result.stderr or result.stdout).strip()
        raise CompileError(f"{shlex.join(command)} failed:\n{output}")
    os.replace(partial, target)
    return command
