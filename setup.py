"""Build script for temseg: setuptools + CMake (pybind11 module ``temseg._C``).

Metadata and dependencies live in pyproject.toml; this file only adds the CMake-built
extension (the packages are the tree under ``temseg/``).

Environment knobs:
    TEMSEG_BUILD_TYPE   CMake build type (default Release)
    CMAKE_GENERATOR     overrides the generator (default Ninja when available)
    CMAKE_ARGS          extra space-separated CMake arguments
    CMAKE_BUILD_PARALLEL_LEVEL  parallel build jobs (default: CPU count)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    """An extension whose sources are built by CMake from ``sourcedir``."""

    def __init__(self, name: str, sourcedir: str | os.PathLike[str] = "") -> None:
        super().__init__(name, sources=[])
        self.sourcedir = os.fspath(Path(sourcedir).resolve())


def _has_ninja() -> bool:
    if shutil.which("ninja"):
        return True
    try:
        import ninja  # noqa: F401
    except ImportError:
        return False
    return True


class CMakeBuild(build_ext):
    """Configure + build the CMake target for each CMakeExtension."""

    def build_extension(self, ext: Extension) -> None:
        if not isinstance(ext, CMakeExtension):
            super().build_extension(ext)
            return
        import pybind11

        ext_fullpath = Path.cwd() / self.get_ext_fullpath(ext.name)
        extdir = ext_fullpath.parent.resolve()
        build_type = os.environ.get("TEMSEG_BUILD_TYPE", "Debug" if self.debug else "Release")
        target = ext.name.rpartition(".")[2]

        cmake_args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={extdir}{os.sep}",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY_{build_type.upper()}={extdir}{os.sep}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DPYTHON_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_BUILD_TYPE={build_type}",
            "-DCMAKE_CXX_FLAGS_RELEASE=-O3 -DNDEBUG",
            "-DTEMSEG_BUILD_PYTHON=ON",
            "-DTEMSEG_BUILD_TESTS=OFF",
            "-DTEMSEG_INSTALL=OFF",
            "-DTEMSEG_BUILD_EXAMPLES=OFF",  # the embedded runtime is built by CMake directly
            "-DTEMSEG_WITH_TENSORRT=OFF",
        ]
        if "CMAKE_ARGS" in os.environ:
            cmake_args += [a for a in os.environ["CMAKE_ARGS"].split(" ") if a]
        if not os.environ.get("CMAKE_GENERATOR") and _has_ninja():
            cmake_args += ["-G", "Ninja"]

        build_args = ["--target", target]
        if "CMAKE_BUILD_PARALLEL_LEVEL" not in os.environ:
            build_args += [f"-j{os.cpu_count() or 1}"]

        build_temp = Path(self.build_temp) / ext.name
        build_temp.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cmake", ext.sourcedir, *cmake_args], cwd=build_temp, check=True)
        subprocess.run(["cmake", "--build", ".", *build_args], cwd=build_temp, check=True)


setup(
    packages=find_packages(where=str(ROOT), include=["temseg", "temseg.*"]),
    # the shipped model and the real example image (with their licence and attribution)
    package_data={"temseg.pretrained": ["*.pt", "registry.json"],
                  "temseg.examples": ["*/README.md", "*/LICENSE", "*/images/*.tif",
                                      "*/masks/*.tif"]},
    ext_modules=[CMakeExtension("temseg._C", sourcedir=str(ROOT))],
    cmdclass={"build_ext": CMakeBuild},
    zip_safe=False,
)
