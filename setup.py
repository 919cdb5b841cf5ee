"""Builds torch_distx._C against the torch that is already installed.

Install with `pip install --no-build-isolation .` so the build uses your torch
instead of downloading another one into an isolated build environment.

UCX is found, in order: $UCX_HOME (include/, lib/), the PyPI wheel `libucx`
(libucx-cu12 / libucx-cu13), then pkg-config `ucx` (Debian: libucx-dev).
CUDA sources (*.cu) are compiled only when the installed torch has CUDA and
DISTX_WITH_CUDA is not 0.
DISTX_TSAN=1 builds with ThreadSanitizer (-O1 -g -fsanitize=thread), for
`make test-tsan`'s Python smoke run (tests/tsan/); nothing else uses it.
"""

import glob
import os
import subprocess
import sys

from setuptools import find_packages, setup

import torch
from torch.utils import cpp_extension

HERE = os.path.dirname(os.path.abspath(__file__))


def find_ucx():
    home = os.environ.get("UCX_HOME")
    if home:
        return {"source": f"UCX_HOME={home}", "include": [os.path.join(home, "include")],
                "libdirs": [os.path.join(home, "lib")], "rpath": [os.path.join(home, "lib")],
                "wheel": False}
    try:
        import libucx  # PyPI libucx-cu12 / libucx-cu13

        root = os.path.dirname(libucx.__file__)
        return {"source": f"libucx wheel ({root})", "include": [os.path.join(root, "include")],
                "libdirs": [os.path.join(root, "lib")],
                "rpath": ["$ORIGIN/../libucx/lib"], "wheel": True}
    except ImportError:
        pass
    try:
        cflags = subprocess.check_output(["pkg-config", "--cflags-only-I", "ucx"], text=True).split()
        libdirs = subprocess.check_output(["pkg-config", "--libs-only-L", "ucx"], text=True).split()
        version = subprocess.check_output(["pkg-config", "--modversion", "ucx"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        sys.exit(
            "torch-distx needs UCX >= 1.13: install Debian's libucx-dev (apt-get install libucx-dev), "
            "or the PyPI wheel libucx-cu13, or set UCX_HOME to a UCX install prefix."
        )
    return {"source": f"pkg-config ucx {version}", "include": [f[2:] for f in cflags],
            "libdirs": [f[2:] for f in libdirs], "rpath": [], "wheel": False}


def sources(pattern):
    return sorted(glob.glob(os.path.join("csrc", "**", pattern), recursive=True))


def find_nccl_include():
    """nccl.h from the nvidia-nccl-cu13 wheel that the CUDA build of torch
    depends on (Note [Loading NCCL]: the library itself is dlopen()ed at run
    time, so nothing links against it); $NCCL_HOME/include overrides."""
    home = os.environ.get("NCCL_HOME")
    if home:
        return os.path.join(home, "include")
    try:
        import nvidia.nccl  # namespace package: no __file__

        for root in nvidia.nccl.__path__:
            inc = os.path.join(root, "include")
            if os.path.exists(os.path.join(inc, "nccl.h")):
                return inc
    except ImportError:
        pass
    sys.exit(
        "torch-distx: a CUDA build needs nccl.h from the nvidia-nccl-cu13 wheel "
        "(pip install nvidia-nccl-cu13), or NCCL_HOME, or DISTX_WITH_CUDA=0 for a CPU-only build."
    )


def cuda_wheel_includes():
    """Include dirs of the CUDA wheels the CUDA build of torch depends on
    (nvidia/cu13/include: cusparse.h, cublas_v2.h, ...), which torch's CUDA
    headers include and a bare CUDA toolkit may lack. Passed as -isystem, so
    they are searched after CUDA_HOME's own headers."""
    try:
        import nvidia  # namespace package
    except ImportError:
        return []
    return [inc for root in nvidia.__path__ for inc in sorted(glob.glob(os.path.join(root, "cu*", "include")))]


ucx = find_ucx()
with_cuda = torch.version.cuda is not None and os.environ.get("DISTX_WITH_CUDA", "1") != "0"
# Only the CUDA build compiles the CUDA half of the backend and the NCCL
# transport (Note [Device dispatch]); the CPU build needs no CUDA header.
cuda_only = [os.path.join("csrc", "backend", "cuda"), os.path.join("csrc", "python", "cuda"),
             os.path.join("csrc", "transport", "nccl")]
srcs = [s for s in sources("*.cpp") if not s.startswith(os.path.join("csrc", "transport", "local"))]
if with_cuda:
    srcs += sources("*.cu")
else:
    srcs = [s for s in srcs if not any(s.startswith(d + os.sep) for d in cuda_only)]
nccl_include = [find_nccl_include()] if with_cuda else []

define_macros = [("DISTX_WITH_CUDA", "1")] if with_cuda else []
cxx_flags = ["-O3", "-Wall", "-Wno-unused-parameter", "-fvisibility=hidden"]
tsan = os.environ.get("DISTX_TSAN", "0") == "1"
if tsan:
    cxx_flags = ["-O1", "-g"] + cxx_flags[1:] + ["-fsanitize=thread"]
wheel_includes = [f for inc in cuda_wheel_includes() for f in ("-isystem", inc)] if with_cuda else []
Extension = cpp_extension.CUDAExtension if with_cuda else cpp_extension.CppExtension
ext = Extension(
    name="torch_distx._C",
    sources=srcs,
    include_dirs=[os.path.join(HERE, "csrc")] + ucx["include"] + nccl_include,
    library_dirs=ucx["libdirs"],
    libraries=["ucp", "uct", "ucs", "ucm"] + (["dl"] if with_cuda else []),
    define_macros=define_macros,
    extra_compile_args=({"cxx": cxx_flags + wheel_includes, "nvcc": ["-O3"] + wheel_includes}
                        if with_cuda else cxx_flags),
    extra_link_args=[f"-Wl,-rpath,{p}" for p in ucx["rpath"]] + (["-fsanitize=thread"] if tsan else []),
)

# Recorded for torch_distx.info and for loading the wheel's UCX before _C.
# (DISTX_WRITE_BUILD_INFO=0: compile-only checks that must not touch the tree.)
_info = os.path.join(HERE, "torch_distx", "_build_info.py")
with open(_info if os.environ.get("DISTX_WRITE_BUILD_INFO", "1") != "0" else os.devnull, "w") as f:
    f.write(
        "# Generated by setup.py; do not edit.\n"
        f"UCX_SOURCE = {ucx['source']!r}\n"
        f"UCX_FROM_WHEEL = {ucx['wheel']!r}\n"
        f"WITH_CUDA = {with_cuda!r}\n"
        f"TORCH_VERSION = {torch.__version__!r}\n"
    )

# DISTX_SKIP_EXT=1: register the package only (the Makefile builds _C in place
# first, incrementally, then installs editable without compiling it again).
skip_ext = os.environ.get("DISTX_SKIP_EXT", "0") == "1"
setup(
    packages=find_packages(include=["torch_distx", "torch_distx.*"]),
    ext_modules=[] if skip_ext else [ext],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
