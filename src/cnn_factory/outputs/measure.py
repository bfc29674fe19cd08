"""Measure output: a number computed from another output's predicted mask, judged against a CSV
column; no head, no loss.

    round_area: {type: measure, of: round, measure: area, column: round_area_px}
    head_circumference: {type: measure, of: head, measure: ellipse_circumference, components: largest,
                         column: hc_mm, spacing_column: pixel_mm}
    liver_ml: {type: measure, of: organs.liver, measure: volume}     # a class of a class mask

`of` names a mask output, or one class of a class mask as `<output>.<class>`; `measure`, one of
scores/measures.py's, is measured on the predicted mask at the label map's own size (after sliding
windows or resizing back). Its unit: mm (mm^2, mL) with a spacing, a volume's own or each row's
`spacing_column` (mm per pixel), else pixels (voxels); `unit: px` measures in pixels anyway.

prepare stores (truth, spacing) per row, NaN where there is none; evaluate compares the measure
with the truth (MAE, bias, 95% limits of agreement, R^2; a Bland-Altman plot); predict writes the
value and its unit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Self

import numpy as np
from pydantic import Field

from cnn_factory.outputs.base import MaskOutput, Output, Spacing
from cnn_factory.outputs.decoding import MeasureRows
from cnn_factory.outputs.planning import ColumnReport
from cnn_factory.outputs.scoring import Figures, Masks, Row, Scorer
from cnn_factory.outputs.writing import Affine, Size, Writer

Name = Literal["area", "volume", "perimeter", "ellipse_circumference", "max_diameter", "count", "mean_intensity"]
AXES = {2: "images", 3: "volumes"}
SPACINGS = "a scan's spacing, a DICOM image's pixel size, or the spacing column"  # where predict finds mm


class MeasureOutput(MeasureRows, Output):
    kind: ClassVar[str] = "measure"
    losses: ClassVar[tuple[str, ...]] = ()
    metric_names: ClassVar[tuple[str, ...]] = ("mae",)  # its test figures' headline; it has no training metric
    headline: ClassVar[str] = "mae"
    curves: ClassVar[str] = ""
    activation: ClassVar[str] = "none"
    trained: ClassVar[bool] = False
    column_keys: ClassVar[tuple[str, ...]] = ("column", "spacing_column")

    type: Literal["measure"]
    of: str = Field(min_length=1, description="mask output it measures, or a class of a class mask: <output>.<class>")
    measure: Name = Field(description="what it measures of the mask")
    column: str = Field("", description="CSV column of the true values (default: none; empty cells: no truth)")
    spacing_column: str | None = Field(None, min_length=1, description="CSV column of each image's mm per pixel")
    components: Literal["all", "largest"] = Field("all", description="the whole mask, or its largest component")
    unit: Literal["mm", "px"] | None = Field(
        None, description="mm: from the spacing (an error without one); px: pixels (default: mm given a spacing)"
    )
    loss: None = None

    def named(self, name: str, input_size: tuple[int, ...]) -> Self:
        spaced = self.spacing_column is not None or len(input_size) == 3  # a volume has its spacing
        filled = self.model_copy(update={"unit": self.unit or ("mm" if spaced else "px")})
        filled._name = name
        return filled

    @property
    def unit_name(self) -> str:
        """The unit of its values: mm, mm2, mL, px, voxels, components, intensity."""
        from cnn_factory.scores.measures import unit

        return unit(self.measure, self.unit == "mm")

    def source(self, outputs: Mapping[str, Output]) -> tuple[str, str | None] | None:
        """(mask output, class or None) that `of` names among `outputs`; None when it names none."""
        if isinstance(outputs.get(self.of), MaskOutput):
            return self.of, None
        name, _, cls = self.of.rpartition(".")
        if isinstance(outputs.get(name), MaskOutput) and cls in getattr(outputs[name], "classes", ()):
            return name, cls
        return None

    def problems_among(self, key: str, outputs: Mapping[str, Output], axes: int) -> list[str]:
        from cnn_factory.scores.measures import MEASURES

        lines = []
        if self.source(outputs) is None:
            masks = [n for n, o in outputs.items() if isinstance(o, MaskOutput)]
            lines.append(
                f"{key}.of: {self.of!r} is no mask output; expected one of {', '.join(masks) or 'none'} "
                "(a class of a class mask as <output>.<class>)"
            )
        spec = MEASURES[self.measure]
        if axes not in spec.dims:
            lines.append(f"{key}.measure: {self.measure} measures {AXES[spec.dims[0]]}; these inputs are {AXES[axes]}")
        if self.unit == "mm" and spec.physical and self.spacing_column is None and axes == 2:
            lines.append(
                f"{key}.unit: mm needs each image's pixel size: name a CSV column of mm per pixel in "
                "spacing_column, or leave unit out to measure in pixels"
            )
        return lines


class MeasureScorer(Scorer[MeasureOutput], of=MeasureOutput):
    interval_metrics: ClassVar[tuple[str, ...]] = ("mae", "bias", "loa_low", "loa_high", "r2")

    @property
    def summary_figures(self) -> Figures:  # type: ignore[override]
        unit = self.output.unit_name
        return (("mae", f"MAE {unit}", ".4g"), ("bias", f"bias {unit}", ".4g"))

    def measured(
        self, masks: Masks, outputs: Mapping[str, Output], stored: np.ndarray, scan: Spacing, image: Any = None
    ) -> float:
        """The measure of the source's predicted mask (0/1, or class indices of a class mask), in mm
        per axis from the row's `spacing_column` (`stored`, prepare's (truth, spacing)), else the
        scan's own, or in pixels; `image` brought to the mask's size for mean_intensity."""
        from cnn_factory.scores.measures import measure

        o = self.output
        source = o.source(outputs)
        assert source is not None  # checked when params are read
        name, cls = source
        mask = masks[name]
        selected = mask == list(getattr(outputs[name], "classes", ())).index(cls) + 1 if cls else mask > 0
        spacing = scan if np.isnan(stored[1]) else (float(stored[1]),) * mask.ndim  # the row's own first
        if o.unit == "px":
            spacing = None
        image = image if o.measure == "mean_intensity" else None
        if image is not None and image.shape[-mask.ndim :] != mask.shape:
            from skimage.transform import resize

            image = resize(np.asarray(image, np.float32), (len(image), *mask.shape), order=1, preserve_range=True)
        return measure(o.measure, selected, spacing, o.components, image)

    def image_scores(self, prediction: np.ndarray, truth: np.ndarray, tolerance: float, spacing: Spacing = None) -> Row:
        """`prediction`: the measured value; `truth`: the true one (NaN: none)."""
        return {"true": float(truth), "measured": float(prediction)}

    def summarise(self, columns: dict[str, np.ndarray]) -> dict[str, float]:
        from cnn_factory.scores.numbers import agreement_summary

        return agreement_summary(columns["true"], columns["measured"])

    def table_cells(self, columns: dict[str, np.ndarray]) -> dict[str, list]:
        cells = {**columns, "difference": columns["measured"] - columns["true"]}
        return {k: [round(float(v), 6) for v in values] for k, values in cells.items()}

    def table_columns(self, cells: dict[str, list[str]]) -> dict[str, np.ndarray]:
        return super().table_columns({k: cells[k] for k in ("true", "measured")})

    def image_values(self, columns: dict[str, np.ndarray], figure: str) -> np.ndarray | None:
        difference = columns["measured"] - columns["true"]  # NaN without a truth: left out of the means
        return {"mae": np.abs(difference), "bias": difference}.get(figure)

    def plots(self, columns: dict[str, np.ndarray]) -> dict[str, list[dict[str, Any]]]:
        known = ~np.isnan(columns["true"])
        pairs = list(zip(columns["true"][known].tolist(), columns["measured"][known].tolist()))
        unit = self.output.unit_name  # one plot definition draws every measure: its lines' labels say the unit
        return {
            "values": [{"truth": round(t, 6), "prediction": round(m, 6)} for t, m in pairs],
            # Bland-Altman: the difference against the mean of the two, per image
            "bland_altman": [
                {"mean": round((t + m) / 2, 6), "difference": round(m - t, 6), "unit": unit} for t, m in pairs
            ],
        }


class MeasureWriter(Writer[MeasureOutput], of=MeasureOutput):
    """Its value as predict measures it (`computed_values`: the value, and 1 where it is in mm): in mm
    (mm^2, mL) when its unit is mm and the image has a spacing (a scan's, a DICOM image's pixel size);
    else in pixels, as the unit column says."""

    def logits_shape(self) -> list:
        return []  # not among the exported logits: `recipe` says how to compute it

    def prediction_columns(self) -> list[str]:
        return [self.output.name, f"{self.output.name}_unit"]

    def _unit(self, value: np.ndarray) -> str:
        from cnn_factory.scores.measures import unit

        return unit(self.output.measure, bool(value[1]))

    def write_prediction(
        self, value: np.ndarray, out: Any, stem: str, size: Size, threshold: float, affine: Affine = None
    ) -> list[str]:
        return [f"{float(value[0]):.6g}", self._unit(value)]

    def answer(self, value: np.ndarray, size: Size, threshold: float, affine: Affine = None) -> dict[str, Any]:
        return {"value": float(value[0]), "unit": self._unit(value)}

    def recipe(self) -> dict[str, Any] | None:
        o = self.output
        return {
            "of": o.of,
            "measure": o.measure,
            "components": o.components,
            "unit": o.unit_name,
            "how": "computed from the predicted mask of `of` at the image's own size, not by the network: "
            "cnn_factory.scores.measures.measure(measure, mask, spacing, components), spacing in mm per axis "
            f"({SPACINGS if o.unit == 'mm' else 'none: pixels'})",
        }


class MeasureColumn(ColumnReport[MeasureOutput], of=MeasureOutput):
    def report(self, values: np.ndarray) -> tuple[str, list[str]]:
        truth = values[:, 0][~np.isnan(values[:, 0])]
        output = self.output
        line = f"{output.measure} of {output.of} in {output.unit_name}, {len(truth)} of {len(values)} rows with a truth"
        return (line + (f", {truth.min():.4g} to {truth.max():.4g}" if len(truth) else "")), []
