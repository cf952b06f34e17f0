"""mvs: learned multi-view stereo — calibrated photographs in, depth maps and a fused point cloud out.

The core library never imports Ray; the Ray layers live in ``jobs/`` and ``mvs.serving``.
"""

__version__ = "0.1.0"
