"""``mvs synth``: synthetic DTU-style scenes with exact ground truth.

Objects (open3d primitives, deformed and combined) on a textured table, textured with
photographs bundled in scikit-image mixed with procedural noise, ray-cast by open3d from a
DTU-like camera rig under several lighting conditions. World units are millimetres.

Modules: ``config`` (settings, seeds), ``shapes`` (meshes), ``textures``, ``scene``
(random scene description), ``rig`` (cameras), ``render`` (ray casting and shading),
``visibility`` (surface samples seen by the cameras), ``writer`` (file layouts),
``generate`` (whole scenes and datasets).
"""

from mvs.data.synthetic.config import SynthConfig
from mvs.data.synthetic.generate import generate_dataset, generate_scene

__all__ = ["SynthConfig", "generate_dataset", "generate_scene"]
