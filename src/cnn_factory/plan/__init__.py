"""`cnn-factory plan`: reads the CSV's images or scans and proposes the settings that fit them and
the machine, as nnU-Net's experiment planner: one fingerprint and one plan, of which images are one
configuration (`fingerprint.Dims` holds all that images and volumes do differently).

    cnn-factory plan [--params params.yaml] [--budget-gb N] [--sample N]

fingerprint.py reads the data set: each file's shape and spacing (an image's is 1 a pixel), the
target spacing, the first input's intensities, per mask output its foreground share and objects
(connected components, as discs or spheres in px or mm), per image-level output its column.
propose.py turns it into params: images choose the mode (whole images resized when small, patches
at native resolution when large or their objects small), volumes the spacing (nnU-Net's rule); a
size from the whole image, about four times the typical object or the median scan, its axis
longest in mm cut until two patches fit the memory budget (the GPU's, else a share of the RAM);
`model.stem`, `model.depth`, `model.filters`, a pretrained encoder whose weights are on the
machine, the batch, the foreground share and the validation's cost. run.py prints them with
their reasons and the `dvc exp run -S ...` line; it writes nothing. The proposals are plain
params: read them, run them, override any of them.
"""

from cnn_factory.plan.run import run_plan

__all__ = ["run_plan"]
