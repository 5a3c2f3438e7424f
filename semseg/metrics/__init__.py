"""One metric contract: a confusion matrix summed over the whole dataset, and scores computed from it.

The contract (docs/metrics.md gives it in full, with how peers differ):

* ``matrix[g, p]`` counts pixels whose ground truth is class ``g`` and whose
  prediction is class ``p`` (rows = ground truth, columns = prediction), summed
  over every image before any score is computed. Pixels whose ground truth is
  the ignore index are not counted.
* Per class: IoU = TP / (TP + FP + FN), acc (recall) = TP / GT,
  precision = TP / predicted, dice = 2TP / (2TP + FP + FN).
* A score whose denominator is 0 is NaN: a class with neither ground truth nor
  predictions has IoU, acc and dice NaN; a class that is only predicted has
  IoU 0 and dice 0 (they count) and acc NaN (no ground truth to recall).
* miou, mean_acc and mdice average the classes that are not NaN;
  pixel_acc = trace / total; fwiou = sum over classes of (GT_c / total) * IoU_c.
* Scores are fractions in 0..1 in the API and the JSON; the printed table shows
  percentages.

A target value that is neither a class nor the ignore index, or a prediction
outside 0..C-1, raises :class:`LabelValueError` naming the values and their
pixel counts: nothing is silently dropped.

Boundary IoU (:class:`BoundaryIoU`, Cheng et al. 2021) needs the label maps
themselves, not only the matrix: a second accumulator, updated beside the
matrix over the same images and reported with it.
"""

from semseg.lazy import lazy_exports

# imported on first use: semseg.metrics.scores (the collapse warning) is used by processes that never import torch.
# No module here is named like a name it exports: importing it would set the package attribute to the module.
_EXPORTS = {
    "BoundaryIoU": "boundary",
    "ConfusionMatrix": "confusion",
    "LabelValueError": "counting",
    **dict.fromkeys(["pair_label_files", "score", "score_folders"], "folders"),
    **dict.fromkeys(["PIXEL_RATIO_FLAG", "check_class_names", "default_class_names", "format_report", "pixel_ratio",
                     "pixel_ratio_flagged", "pixel_ratio_flags", "pixel_ratio_text", "report", "report_json"], "reporting"),
    **dict.fromkeys(["CLASS_KEYS", "MEAN_KEYS", "collapse_warning", "compute_scores"], "scores"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "BoundaryIoU",
    "CLASS_KEYS",
    "ConfusionMatrix",
    "LabelValueError",
    "MEAN_KEYS",
    "check_class_names",
    "collapse_warning",
    "compute_scores",
    "default_class_names",
    "format_report",
    "pair_label_files",
    "report",
    "report_json",
    "score",
    "score_folders",
]
