"""Import open3d on machines that lack the system libusb.

open3d's shared library links against ``libusb-1.0.so.0``. Machines without it (and
without root to ``apt-get install libusb-1.0-0``) get it from the ``libusb-package``
wheel, loaded globally before open3d so the dynamic linker resolves the symbol.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from types import ModuleType


@functools.cache
def _preload_libusb() -> None:
    if ctypes.util.find_library("usb-1.0"):
        return
    try:
        import libusb_package
    except ImportError:
        return
    path = libusb_package.get_library_path()
    if path is not None and os.path.exists(path):
        ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)


def open3d() -> ModuleType:
    """Return the ``open3d`` module, loading libusb first when the system lacks it."""
    _preload_libusb()
    import open3d as o3d

    return o3d
