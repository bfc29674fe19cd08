"""What prediction needs of an output kind: predict's columns and files, serve's answers and
export's logits shape. Each kind's module defines its `Writer` beside its core (base.py's
`Adapter`); predict.py, serve/ and export.py call these; the defaults write an image-level number.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np

from cnn_factory.outputs.base import Adapter, Kind

Affine = np.ndarray | None  # a scan's 4x4 affine, which places its files on its grid; None for an image
Size = tuple[int, ...]  # the image's own (H, W) or the scan's (D, H, W), which a mask is written at


class Writer(Adapter[Kind]):
    """An output's predictions as files, cells and answers: `self.output` is its core."""

    def logits_shape(self) -> list:
        """Shape of the exported logits, `batch` first."""
        return ["batch"]

    def recipe(self) -> dict[str, Any] | None:
        """(kinds without a head) How to compute it from the exported outputs, for export's sidecar."""
        return None

    def prediction_columns(self) -> list[str]:
        """Columns of predictions.csv for this output."""
        return [self.output.name]

    def write_prediction(
        self, value: np.ndarray, out: Path, stem: str, size: Size, threshold: float, affine: Affine = None
    ) -> list[str]:
        """predictions.csv cells for one image (and any file they name, under `out`); a volume's
        masks (`size` (D, H, W)) are written as NIfTI on the scan's grid, placed by its `affine`."""
        return [f"{float(value):.6g}"]

    def prediction_file(self, value: np.ndarray, size: Size, threshold: float, affine: Affine = None) -> bytes | None:
        """(mask kinds) The mask file predict writes for one image, as bytes: a PNG, or a scan's
        .nii.gz on its grid, placed by its `affine`; None for the others."""
        return None

    def answer(self, value: np.ndarray, size: Size, threshold: float, affine: Affine = None) -> dict[str, Any]:
        """`cnn-factory serve`'s JSON for one image (a scan, with its `affine`): the value here; a mask
        kind gives its file (`MaskWriter`), a category its label and probabilities."""
        return {"value": float(value)}


class MaskWriter(Writer[Kind]):
    """A mask kind's Writer: its predicted mask (`predicted_image`) at the image's own size, written
    as `mask_file` gives it; predict's cells are the file and each class's share of the pixels, serve's
    answer the file, base64-encoded, and its pixels per class (`pixel_counts`, background first)."""

    def predicted_image(self, value: np.ndarray, size: Size, threshold: float) -> np.ndarray:
        """The (H, W) (or (D, H, W)) uint8 mask predict writes, at `size`."""
        raise NotImplementedError

    def mask_file(self, mask: np.ndarray, affine: Affine) -> bytes:
        """The PNG of a mask, or a scan's .nii.gz placed by `affine`."""
        raise NotImplementedError

    def pixel_counts(self, mask: np.ndarray) -> dict[str, int]:
        raise NotImplementedError

    def prediction_file(self, value: np.ndarray, size: Size, threshold: float, affine: Affine = None) -> bytes:
        return self.mask_file(self.predicted_image(value, size, threshold), affine)

    def write_prediction(
        self, value: np.ndarray, out: Path, stem: str, size: Size, threshold: float, affine: Affine = None
    ) -> list[str]:
        mask = self.predicted_image(value, size, threshold)
        path = out / self.output.name / f"{stem}{'.png' if affine is None else '.nii.gz'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.mask_file(mask, affine))
        shares = [n / mask.size for n in list(self.pixel_counts(mask).values())[1:]]
        return [f"{self.output.name}/{path.name}", *(f"{s:.4f}" for s in shares)]

    def answer(self, value: np.ndarray, size: Size, threshold: float, affine: Affine = None) -> dict[str, Any]:
        """The mask file, base64-encoded, and its pixels per class. A scan's (placed by `affine`): its
        voxels per class, their volume in mL (the voxel's from the scan's spacing), and `slice`, its
        middle slice as the PNG an image's mask would be."""
        mask = self.predicted_image(value, size, threshold)
        counts = self.pixel_counts(mask)
        encoded = base64.b64encode(self.mask_file(mask, affine)).decode("ascii")
        if affine is None:
            return {"mask": encoded, "pixels": counts}
        from cnn_factory.volumes import affine_spacing

        ml = float(np.prod(affine_spacing(affine))) / 1000  # a voxel's mm^3, in mL
        return {
            "mask": encoded,
            "voxels": counts,
            "ml": {c: n * ml for c, n in counts.items()},
            "slice": base64.b64encode(self.mask_file(mask[len(mask) // 2], None)).decode("ascii"),
        }
