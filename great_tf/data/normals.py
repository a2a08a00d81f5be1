"""Surface normals from a depth map: the NYUv2 targets the paper derives "algorithmically".

The paper does not say how its normals were made; ours are (docs/design.md#nyuv2):

1. **Back-projection** of every pixel with the pinhole model of the NYUv2 RGB camera. The
   constants are those of the NYUv2 toolbox (`camera_params.m`, 640x480 images): fx = 518.858,
   fy = 519.470, cx = 325.582, cy = 253.736 (`FX`, `FY`, `CX`, `CY` below, in full). The
   toolbox back-projects with MATLAB's 1-based pixel indices (`rgb_plane2rgb_world.m`:
   `[xx, yy] = meshgrid(1:640, 1:480); x = (xx - cx) .* z / fx`), so with 0-based indices the
   principal point is (cx - 1, cy - 1). A point is P = Z * ((u - cx) / fx, (v - cy) / fy, 1) for
   column u, row v: the camera frame has x right, y down, z forward (the toolbox flips y to point
   up in its world frame; we keep the right-handed camera frame).
2. **Resized images** keep the camera: `Intrinsics.resized` scales the focal lengths by the
   resize factor of each axis and maps the principal point with pixel centres aligned, as
   `tf.image.resize` aligns them: c' = (c + 0.5) * s - 0.5. Resizing 640x480 to a square changes
   the aspect ratio, so fx and fy scale differently.
3. **Tangents** dP/du and dP/dv by central differences of the back-projected points; where a
   neighbour is invalid (depth 0) the one-sided difference with the other neighbour is used, and
   a pixel with no valid neighbour along an axis has no normal.
4. **Normal** = dP/du x dP/dv, normalised, and **oriented towards the camera** (n . P < 0): the
   sign a surface seen by the camera must have. The paper's loss 1 - |cos| ignores the sign anyway.

Invalid pixels (depth 0, or no tangent) get the zero vector: every loss and metric masks them.
Across an occlusion boundary the differences join two surfaces, so the normal there is that of
the chord between them: such pixels are few at 80x80 and are left as they are.
"""

from dataclasses import dataclass

import numpy as np

# The NYUv2 toolbox's RGB camera (camera_params.m), for 640x480 images, 1-based pixel indices.
FX = 5.1885790117450188e02
FY = 5.1946961112127485e02
CX = 3.2558244941119034e02
CY = 2.5373616633400465e02
SOURCE_HEIGHT, SOURCE_WIDTH = 480, 640


@dataclass(frozen=True)
class Intrinsics:
    """A pinhole camera for an image of `height` x `width` pixels, with 0-based pixel-centre
    coordinates: the centre of column u, row v is (u, v)."""

    fx: float
    fy: float
    cx: float
    cy: float
    height: int
    width: int

    def resized(self, height, width):
        """The same camera for the image resized to `height` x `width` (pixel centres aligned)."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5,
                          (self.cy + 0.5) * sy - 0.5, height, width)

    def rays(self):
        """(H, W, 3) float64: the ray through every pixel centre, scaled to z = 1."""
        u = np.arange(self.width, dtype=np.float64)
        v = np.arange(self.height, dtype=np.float64)
        uu, vv = np.meshgrid(u, v)
        return np.stack([(uu - self.cx) / self.fx, (vv - self.cy) / self.fy,
                         np.ones_like(uu)], axis=-1)


NYUV2_INTRINSICS = Intrinsics(FX, FY, CX - 1.0, CY - 1.0, SOURCE_HEIGHT, SOURCE_WIDTH)


def back_project(depth, intrinsics):
    """(..., H, W) depths along z -> (..., H, W, 3) points in the camera frame (float64)."""
    depth = np.asarray(depth, np.float64)
    if depth.shape[-2:] != (intrinsics.height, intrinsics.width):
        raise ValueError(f"depth of shape {depth.shape} does not match the camera's "
                         f"{intrinsics.height}x{intrinsics.width} pixels: use Intrinsics.resized")
    return depth[..., None] * intrinsics.rays()


def _tangent(points, valid, axis):
    """Differences of `points` along image `axis` (-3: rows, -2: columns) and where they exist:
    central where both neighbours are valid, else one-sided with the valid one."""
    def shifted(a, step, fill):
        out = np.full_like(a, fill)
        n = a.shape[axis]
        dst = [slice(None)] * a.ndim
        src = [slice(None)] * a.ndim
        if step > 0:  # out[i] = a[i + 1]
            dst[axis], src[axis] = slice(0, n - 1), slice(1, n)
        else:  # out[i] = a[i - 1]
            dst[axis], src[axis] = slice(1, n), slice(0, n - 1)
        out[tuple(dst)] = a[tuple(src)]
        return out

    mask = valid[..., None]
    after, before = shifted(points, 1, 0.0), shifted(points, -1, 0.0)
    after_ok = shifted(mask, 1, False) & mask
    before_ok = shifted(mask, -1, False) & mask
    central = (after - before) / 2.0
    one_sided = np.where(after_ok, after - points, np.where(before_ok, points - before, 0.0))
    tangent = np.where(after_ok & before_ok, central, one_sided)
    return tangent, (after_ok | before_ok)[..., 0]


def normals_from_depth(depth, intrinsics=NYUV2_INTRINSICS):
    """Unit normals facing the camera and their validity, from (..., H, W) depths (0: invalid).

    Returns (normals float32 (..., H, W, 3), valid bool (..., H, W)); invalid normals are 0.
    """
    depth = np.asarray(depth, np.float64)
    valid = depth > 0
    points = back_project(np.where(valid, depth, 0.0), intrinsics)
    # Axis -3 of the points array is the row (v), axis -2 the column (u).
    d_du, has_u = _tangent(points, valid, axis=-2)
    d_dv, has_v = _tangent(points, valid, axis=-3)
    normal = np.cross(d_du, d_dv)
    length = np.linalg.norm(normal, axis=-1, keepdims=True)
    ok = valid & has_u & has_v & (length[..., 0] > 0)
    normal = np.where(ok[..., None], normal / np.where(length > 0, length, 1.0), 0.0)
    facing_away = np.sum(normal * points, axis=-1, keepdims=True) > 0
    normal = np.where(facing_away, -normal, normal)
    return normal.astype(np.float32), ok
