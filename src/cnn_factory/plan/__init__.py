"""`cnn-factory plan`: reads the CSV's images or scans and proposes the settings that fit them and
the machine, as nnU-Net's experiment planner: one fingerprint and one plan, of which images are one
configuration (`dims.Dims` holds all that images and volumes do differently).

    cnn-factory plan [--params params.yaml] [--budget-gb N] [--sample N]

fingerprint.py reads the data set: each file's shape and spacing (an image's is 1 a pixel), the
target spacing, the first input's intensities, per mask output its foreground share and objects
(connected components, as discs or spheres in px or mm), per image-level output its column.
dims.py decides the first row: images choose the mode (whole images resized when small, patches
at native resolution when large or their objects small, whole images resized when large with
objects a patch cannot hold), volumes the spacing (nnU-Net's rule).
patch.py sizes the patch from the whole image, about four times the typical object or the median
scan, its axis longest in mm cut until two patches fit the memory budget (the GPU's, else a share
of the RAM), and the depth. propose.py adds `model.stem`, `model.filters`, a pretrained encoder
whose weights are on the machine, the batch, the foreground share and the validation's cost;
budget.py the training budget that goes with the batch (the learning rate, and the patches per
epoch or epochs that keep the optimiser steps in range); timing.py times the proposed network's
step on this machine for the run's expected time. run.py prints them with their reasons and the
`dvc exp run -S ...` line; it writes nothing. The proposals are plain params: read them, run
them, override any of them.
"""

from cnn_factory.plan.run import run_plan

__all__ = ["run_plan"]
