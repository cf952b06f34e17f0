"""File formats: one module per format, one reader and one writer each."""

from mvs.io.cam import CamFile, DepthLine, read_cam, write_cam
from mvs.io.images import read_image, read_mask, write_image, write_mask
from mvs.io.pair import ViewPairs, read_pair, write_pair
from mvs.io.pfm import read_pfm, write_pfm
from mvs.io.ply import read_point_attributes, read_point_cloud, write_point_cloud

__all__ = [
    "CamFile",
    "DepthLine",
    "ViewPairs",
    "read_cam",
    "read_image",
    "read_mask",
    "read_pair",
    "read_pfm",
    "read_point_attributes",
    "read_point_cloud",
    "write_cam",
    "write_image",
    "write_mask",
    "write_pair",
    "write_pfm",
    "write_point_cloud",
]
