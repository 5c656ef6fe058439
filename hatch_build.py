"""Hatch build hook: compile ``rymi_codecs._fir``, the resampler's C inner loop.

The extension is optional: ``rymi_codecs.resample`` falls back to its numpy path, with the
same bytes, when it is missing. So a failed compilation (no C compiler, no Python headers)
warns and lets the build go on; ``tests/codecs/test_resample_accel.py`` is what refuses a
test environment without it.

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

SOURCE = Path("codecs/rymi_codecs/_fir.c")
PACKAGE = "rymi_codecs"
CFLAGS = ["-O3", "-fPIC", "-fvisibility=hidden", "-Wall"]
INSTALL_HINT = "sudo apt-get install gcc python3-dev"


class CompileError(Exception):
    """The extension could not be built; the message says why and what to install."""


class CompileFir(BuildHookInterface):
    """Builds ``rymi_codecs._fir`` for the wheel target (standard and editable)."""

    _tmp: str | None = None
    """Folder of a standard build's module, removed once the wheel is written."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        name = "_fir" + str(sysconfig.get_config_var("EXT_SUFFIX") or ".so")
        root = Path(self.root)
        if version == "editable":
            target = root / SOURCE.parent / name
        else:
            self._tmp = tempfile.mkdtemp(prefix="rymi-fir-")
            target = Path(self._tmp) / name
        try:
            command = compile_extension(root / SOURCE, target)
        except CompileError as exc:
            self.app.display_warning(
                f"rymi_codecs._fir was not built: {exc}. The resampler falls back to numpy "
                f"(same output, 3-4x the CPU per frame). To build it: {INSTALL_HINT}, "
                "then reinstall."
            )
            return
        self.app.display_info(f"built {target.name}: {shlex.join(command)}")
        if version != "editable":
            build_data["force_include"][str(target)] = f"{PACKAGE}/{name}"
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
