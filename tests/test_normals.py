"""Surface normals from depth (great_tf/data/normals.py) against analytic planes and spheres."""

import numpy as np
import pytest

from great_tf.data.normals import (CX, CY, FX, FY, NYUV2_INTRINSICS, Intrinsics, back_project,
                                   normals_from_depth)
from great_tf.data.nyuv2 import resize_depth

CAMERA = NYUV2_INTRINSICS.resized(80, 80)


def unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def plane_depth(camera, normal, offset):
    """Depth of the plane {P : normal . P = offset} along every pixel's ray."""
    return offset / (camera.rays() @ normal)


def sphere_depth(camera, centre, radius):
    """Depth of the near side of a sphere (0 where a ray misses it)."""
    rays = camera.rays()
    b, a = rays @ centre, np.sum(rays * rays, -1)
    disc = b * b - a * (centre @ centre - radius**2)
    hit = disc > 0
    return np.where(hit, (b - np.sqrt(np.where(hit, disc, 0.0))) / a, 0.0)


def angles(a, b):
    return np.degrees(np.arccos(np.clip(np.sum(a * b, -1), -1.0, 1.0)))


def test_the_toolbox_camera_in_zero_based_pixel_coordinates():
    assert (FX, FY, CX, CY) == (5.1885790117450188e02, 5.1946961112127485e02,
                                3.2558244941119034e02, 2.5373616633400465e02)
    # rgb_plane2rgb_world.m: x = (xx - cx) * z / fx with xx = 1..640, so column u = xx - 1.
    z = np.full((480, 640), 2.0)
    points = back_project(z, NYUV2_INTRINSICS)
    np.testing.assert_allclose(points[9, 99], [(100 - CX) * 2 / FX, (10 - CY) * 2 / FY, 2.0])


def test_a_resized_camera_sees_every_pixel_centre_along_the_same_ray():
    small = NYUV2_INTRINSICS.resized(80, 100)
    sx, sy = 100 / 640, 80 / 480
    u, v = np.meshgrid(np.arange(100), np.arange(80))
    source_u, source_v = (u + 0.5) / sx - 0.5, (v + 0.5) / sy - 0.5  # tf.image.resize's mapping
    rays = small.rays()
    np.testing.assert_allclose(rays[..., 0], (source_u - NYUV2_INTRINSICS.cx) / FX, atol=1e-12)
    np.testing.assert_allclose(rays[..., 1], (source_v - NYUV2_INTRINSICS.cy) / FY, atol=1e-12)


@pytest.mark.parametrize("normal", [(0, 0, -1), (0.3, -0.5, -1), (-0.4, 0.2, -1), (0, 0.6, -1)])
def test_planes_get_their_exact_normal_facing_the_camera(normal):
    n = unit(normal)
    depth = plane_depth(CAMERA, n, -2.0)  # n . P = -2 < 0: n faces the camera
    assert depth.min() > 0
    normals, valid = normals_from_depth(depth, CAMERA)
    assert valid.all()
    np.testing.assert_allclose(normals, np.broadcast_to(n, normals.shape), atol=1e-6)
    # The same plane written with the opposite normal still gets the camera-facing one.
    flipped, _ = normals_from_depth(plane_depth(CAMERA, -n, 2.0), CAMERA)
    np.testing.assert_allclose(flipped, normals, atol=1e-6)


def test_holes_are_invalid_and_their_neighbours_use_one_sided_differences():
    n = unit((0.2, -0.4, -1.0))
    depth = plane_depth(CAMERA, n, -2.0)
    depth[30:33, 40:45] = 0.0          # a hole
    depth[60, :] = 0.0                 # a missing row
    depth[70:73, 10:13] = 0.0
    depth[71, 11] = 2.5                # an isolated valid pixel: no tangent, no normal
    normals, valid = normals_from_depth(depth, CAMERA)
    assert not valid[30:33, 40:45].any() and not valid[60].any() and not valid[71, 11]
    assert np.all(normals[~valid] == 0.0)
    assert valid[29, 40] and valid[61, 5] and valid[59, 5]  # next to holes: one-sided, still exact
    np.testing.assert_allclose(normals[valid], np.broadcast_to(n, normals[valid].shape), atol=1e-6)
    assert valid.sum() == 80 * 80 - 15 - 80 - 8 - 1


def test_a_sphere_gets_its_radial_normals():
    centre, radius = np.array([0.2, -0.1, 3.0]), 1.0
    depth = sphere_depth(CAMERA, centre, radius)
    normals, valid = normals_from_depth(depth, CAMERA)
    points = back_project(depth, CAMERA)
    truth = (points - centre) / radius  # outward, which faces the camera on the near side
    np.testing.assert_array_equal(valid, depth > 0)
    assert np.all(np.sum(normals * points, -1)[valid] < 0)  # oriented towards the camera
    # Away from the silhouette (surface within 60° of facing the camera) central differences
    # are accurate to second order: measured mean 0.06°, max 0.31°.
    to_camera = -points / np.maximum(np.linalg.norm(points, axis=-1, keepdims=True), 1e-12)
    inner = valid & (np.sum(truth * to_camera, -1) > 0.5)
    assert inner.sum() > 1500
    error = angles(normals[inner], truth[inner])
    assert error.mean() < 0.1 and error.max() < 0.5


@pytest.mark.parametrize("size", [80, 16])
def test_normals_of_a_downsampled_depth_map_with_the_resized_camera(size):
    """The loader's path: 640x480 depth, masked area resize, normals with the resized camera.
    Swapping the axes' scale factors would tilt the result by degrees; it stays within 0.03°."""
    n = unit((0.3, -0.5, -1.0))
    depth = plane_depth(NYUV2_INTRINSICS, n, -2.0).astype(np.float32)
    small = resize_depth(depth[None], size).numpy()[0]
    normals, valid = normals_from_depth(small, NYUV2_INTRINSICS.resized(size, size))
    assert valid.all()
    assert angles(normals, n).max() < 0.03
    right = NYUV2_INTRINSICS.resized(size, size)
    wrong = Intrinsics(FX * size / 480, FY * size / 640, right.cx, right.cy, size, size)
    assert angles(normals_from_depth(small, wrong)[0], n).mean() > 1.0


def test_depth_of_the_wrong_size_for_the_camera_is_refused():
    with pytest.raises(ValueError, match="Intrinsics.resized"):
        normals_from_depth(np.ones((80, 80)), NYUV2_INTRINSICS)
