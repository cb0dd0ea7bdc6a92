"""Build of the C extension mlserve._core.

OpenBLAS comes from the scipy-openblas32 wheel (a build requirement, so a
fresh machine needs nothing installed by hand); its shared library is copied
next to the extension, which finds it through an $ORIGIN rpath, so nothing
depends on the build environment or LD_LIBRARY_PATH at run time. Without that
wheel a system OpenBLAS found by pkg-config is used instead.

Environment:
  MLSERVE_DEBUG=1     -O0 -g, assertions on
  MLSERVE_SANITIZE=1  AddressSanitizer + UndefinedBehaviorSanitizer
                      (run Python with LD_PRELOAD=$(gcc -print-file-name=libasan.so))
  MLSERVE_BLAS=system skip the wheel and use pkg-config's openblas
"""
import glob
import os
import shutil
import subprocess

import numpy
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def find_openblas():
    """Return (include_dirs, library_dirs, libraries, macros, shared_lib_to_copy)."""
    if os.environ.get("MLSERVE_BLAS", "wheel") != "system":
        try:
            import scipy_openblas32 as sob
        except ImportError:
            sob = None
        if sob is not None:
            lib_dir = sob.get_lib_dir()
            return (
                [sob.get_include_dir()],
                [lib_dir],
                [sob.get_library()],
                [("MLS_BLAS_SCIPY_PREFIX", "1")],
                os.path.join(lib_dir, sob.get_library(fullname=True)),
            )
    try:
        cflags = subprocess.check_output(["pkg-config", "--cflags-only-I", "openblas"], text=True)
        libs = subprocess.check_output(["pkg-config", "--libs", "openblas"], text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(
            "mlserve needs OpenBLAS: install the scipy-openblas32 wheel "
            "(pip install scipy-openblas32) or a system OpenBLAS with pkg-config "
            f"metadata (apt-get install libopenblas-dev pkg-config): {exc}"
        )
    include_dirs = [f[2:] for f in cflags.split() if f.startswith("-I")]
    library_dirs = [f[2:] for f in libs.split() if f.startswith("-L")]
    libraries = [f[2:] for f in libs.split() if f.startswith("-l")]
    return include_dirs, library_dirs, libraries, [], None


BLAS_INCLUDE, BLAS_LIBDIRS, BLAS_LIBS, BLAS_MACROS, BLAS_SHARED = find_openblas()

compile_args = ["-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden"]
link_args = []
macros = list(BLAS_MACROS) + [("_GNU_SOURCE", "1"), ("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")]
if os.environ.get("MLSERVE_DEBUG"):
    compile_args += ["-O0", "-g3"]
    macros.append(("MLS_DEBUG", "1"))
else:
    compile_args += ["-O3"]
    macros.append(("NDEBUG", "1"))
if os.environ.get("MLSERVE_SANITIZE"):
    sanitize = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
    compile_args += sanitize + ["-g"]
    link_args += sanitize
if BLAS_SHARED:
    link_args.append("-Wl,-rpath,$ORIGIN")

core = Extension(
    "mlserve._core",
    sources=sorted(glob.glob("csrc/*.c")) + sorted(glob.glob("csrc/graph/*.c")),
    depends=sorted(glob.glob("csrc/*.h")) + sorted(glob.glob("csrc/graph/*.h")),
    include_dirs=["csrc", numpy.get_include()] + BLAS_INCLUDE,
    library_dirs=BLAS_LIBDIRS,
    libraries=BLAS_LIBS + ["m"],
    define_macros=macros,
    extra_compile_args=compile_args,
    extra_link_args=link_args,
)


def replace_file(src, dst):
    """Copy by rename: a process that has the old shared library mapped keeps
    it (rewriting it in place would crash that process with SIGBUS)."""
    tmp = f"{dst}.tmp{os.getpid()}"
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)


class BuildExtWithBlas(build_ext):
    """Copies the wheel's OpenBLAS next to the built extension ($ORIGIN rpath)."""

    def run(self):
        super().run()
        if not BLAS_SHARED:
            return
        for ext in self.extensions:
            target_dir = os.path.dirname(self.get_ext_fullpath(ext.name))
            os.makedirs(target_dir, exist_ok=True)
            replace_file(BLAS_SHARED, os.path.join(target_dir, os.path.basename(BLAS_SHARED)))

    def copy_file(self, infile, outfile, *args, **kwargs):
        # used for --inplace / editable builds, into a tree others may be running
        replace_file(infile, outfile)
        return outfile, 1


setup(
    ext_modules=[core],
    cmdclass={"build_ext": BuildExtWithBlas},
    package_data={"mlserve": ["*.so"]},
)
