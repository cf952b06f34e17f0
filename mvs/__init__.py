"""mvs: learned multi-view stereo — calibrated photographs in, depth maps and a fused point cloud out.

The core library never imports Ray; the Ray layers live outside it: the batch jobs in
``jobs/`` and the HTTP service in the top-level package ``mvs_serving``.
"""

__version__ = "0.1.0"
