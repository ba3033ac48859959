"""Face alignment: pure 2-D geometry from five landmarks to a canonical crop and back.

Two canonical frames are used throughout the project:

- the *arcface* frame (112x112): the insightface ``arcface_dst`` template that the face recognisers
  (ArcFace, CurricularFace) were trained on; the identity projector reads these crops;
- the *FFHQ* frame (``size x size``): where the generator lives. The face sits as in FFHQ (Karras et
  al. 2019): eyes at ~47 % of the height, generous margin with hair, chin and some background.

All matrices are ``[2, 3]`` float64 forward maps in OpenCV's convention: a point ``p`` of the source
image lands at ``M @ [x, y, 1]`` in the crop (``cv2.warpAffine(image, M, (size, size))``).
Landmarks are ``[5, 2]`` ``(x, y)`` pixels in the order left eye, right eye, nose tip, left mouth
corner, right mouth corner (as seen in the image), as in ``records.Detection``.
"""

from __future__ import annotations

import cv2
import numpy as np

ARCFACE_SIZE = 112  # side of the face recognisers' input crop, in pixels

# insightface ``face_align.arcface_dst``: where the five landmarks sit in a 112x112 recogniser crop.
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)

# The five landmarks of the mean FFHQ face in a 512x512 FFHQ-aligned image: the 5-point template that
# GFPGAN / CodeFormer (facexlib ``FaceRestoreHelper``) use to reproduce FFHQ's alignment from a 5-point
# detector. FFHQ itself was aligned from 68 dlib landmarks (eye centres and mouth corners define the
# oriented crop square); fitting a similarity to these mean positions gives the same framing to within
# a few pixels without needing a 68-point model, and keeps every crop of the project in one frame.
_FFHQ_TEMPLATE_512 = np.array(
    [[192.98138, 239.94708], [318.90277, 240.19360], [256.63416, 314.01935], [201.26117, 371.41043],
     [313.08905, 371.15118]],
    dtype=np.float64,
)


def ffhq_template(size: int) -> np.ndarray:
    """[5, 2] float64: the FFHQ 5-point template for a ``size x size`` crop (pixels, pixel-centre convention
    of ``cv2.warpAffine``)."""
    if size <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    return _FFHQ_TEMPLATE_512 * (size / 512.0)


def arcface_template(size: int = ARCFACE_SIZE) -> np.ndarray:
    """[5, 2] float64: the arcface template scaled to a ``size x size`` crop (112 is the recognisers' own)."""
    return ARCFACE_TEMPLATE_112 * (size / ARCFACE_SIZE)


def estimate_affine(landmarks: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) taking ``landmarks`` onto
    ``template`` (Umeyama 1991, without reflection). Closed form, so deterministic (no RANSAC/LMEDS).

    landmarks, template: [K, 2] with K >= 2. Returns M [2, 3] float64.
    """
    src = np.asarray(landmarks, dtype=np.float64)
    dst = np.asarray(template, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or src.shape[0] < 2:
        raise ValueError(f"landmarks {src.shape} and template {dst.shape} must both be [K, 2] with K >= 2")
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if src_var < 1e-12:
        raise ValueError("landmarks are degenerate (all at one point)")
    cov = dst_c.T @ src_c / len(src)  # [2, 2]
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # forbid reflections
        d[1] = -1.0
    rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_var
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The inverse of an invertible [2, 3] affine map, as [2, 3] float64."""
    matrix = np.asarray(matrix, dtype=np.float64)
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def compose_affine(second: np.ndarray, first: np.ndarray) -> np.ndarray:
    """[2, 3] map that applies ``first`` then ``second``."""
    a = np.vstack([np.asarray(second, np.float64), [0.0, 0.0, 1.0]])
    b = np.vstack([np.asarray(first, np.float64), [0.0, 0.0, 1.0]])
    return (a @ b)[:2]


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply M [2, 3] to points [..., 2]; returns float64 of the same shape."""
    points = np.asarray(points, dtype=np.float64)
    matrix = np.asarray(matrix, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def warp_crop(image: np.ndarray, matrix: np.ndarray, size: int, *, border: str = "constant") -> np.ndarray:
    """Cut the ``size x size`` crop that ``matrix`` maps ``image`` ([H, W, C] uint8 or float) onto.

    border: ``"constant"`` fills outside pixels with 0 (insightface's recogniser crops); ``"reflect"``
    mirrors the image at its edges (what FFHQ did before blurring the padding), which keeps the
    generator from learning black wedges where a face was near the border of the photo.
    """
    modes = {"constant": cv2.BORDER_CONSTANT, "reflect": cv2.BORDER_REFLECT_101, "replicate": cv2.BORDER_REPLICATE}
    if border not in modes:
        raise ValueError(f"unknown border {border!r}; choose one of {sorted(modes)}")
    return cv2.warpAffine(
        image, np.asarray(matrix, np.float64), (size, size), flags=cv2.INTER_LINEAR, borderMode=modes[border],
        borderValue=0,
    )


def warp_back(crop: np.ndarray, matrix: np.ndarray, width: int, height: int) -> np.ndarray:
    """Map a crop made with ``warp_crop(image, matrix, size)`` back into a ``width x height`` image
    (pixels outside the crop are 0). Pair it with a warped mask to paste back."""
    return cv2.warpAffine(
        crop, np.asarray(matrix, np.float64), (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )


def ffhq_to_arcface(size: int, crop_size: int = ARCFACE_SIZE) -> np.ndarray:
    """The fixed [2, 3] map from a ``size x size`` FFHQ-aligned image to its ``crop_size`` arcface crop.

    Both frames are defined by templates of the same five points, so the generator's output (already
    FFHQ-aligned) reaches the recogniser's frame with this one similarity, with no landmark detection.
    """
    return estimate_affine(ffhq_template(size), arcface_template(crop_size))


def affine_grid_theta(matrix: np.ndarray, src_size: tuple[int, int], dst_size: tuple[int, int]) -> np.ndarray:
    """The ``theta`` [2, 3] for ``torch.nn.functional.affine_grid(..., align_corners=False)`` that makes
    ``grid_sample`` do what ``warp_crop`` does with ``matrix``: a differentiable warp on the GPU.

    ``affine_grid`` maps *output* normalised coordinates to *input* normalised coordinates, where pixel
    centre ``x`` of an ``S``-pixel axis sits at ``(2x + 1) / S - 1``. src_size and dst_size are (width, height).
    """
    def to_normalized(width: int, height: int) -> np.ndarray:
        return np.array([[2.0 / width, 0.0, 1.0 / width - 1.0], [0.0, 2.0 / height, 1.0 / height - 1.0]])

    from_dst = invert_affine(to_normalized(*dst_size))  # normalised output -> output pixels
    return compose_affine(to_normalized(*src_size), compose_affine(invert_affine(matrix), from_dst))


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int, *, frame: str = "ffhq",
               border: str = "constant") -> tuple[np.ndarray, np.ndarray]:
    """Aligned crop of one face: ``(crop [size, size, C], M [2, 3])``; ``frame`` is ``"ffhq"`` or ``"arcface"``."""
    if frame == "ffhq":
        template = ffhq_template(size)
    elif frame == "arcface":
        template = arcface_template(size)
    else:
        raise ValueError(f"unknown frame {frame!r}; choose ffhq or arcface")
    matrix = estimate_affine(landmarks, template)
    return warp_crop(image, matrix, size, border=border), matrix
