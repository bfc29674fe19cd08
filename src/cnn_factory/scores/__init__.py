"""Test-set scores per image and over images, with bootstrap intervals (used by evaluate).

    masks.mask_scores(pred, truth, tolerance=2.0)  # one image or volume: dice, iou, hd95, nsd, pixel counts
    classes.class_summary(true, probs, names)       # accuracy, balanced accuracy, F1, AUC, ECE, ...
    numbers.number_summary(true, predicted)        # mae, rmse, r2
    bootstrap.intervals(columns, summarise, names, 1000, seed=0)  # 95% intervals over resampled images

Conventions (docs/evaluation.md): distances in pixels of the label map, or in mm given the voxel
spacing; an image whose truth and prediction are both empty has no dice, IoU, HD95 or surface dice
(it is left out of the means over images, as nnU-Net does, and counted); one empty and the other
not scores dice 0, surface dice 0 and HD95 the image's diagonal (the largest distance it can hold).
"""
