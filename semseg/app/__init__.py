"""``semseg app``: a local web page to try a model on images (Gradio; ``pip install 'semseg[app]'``).

- :mod:`~semseg.app.segment`: what the page computes, without Gradio: the models
  on offer (:class:`ModelChoices`), one image segmented (:func:`segment`: overlay,
  legend, per-class areas, label PNG);
- :mod:`~semseg.app.web`: the Gradio page over it (:func:`build_app`, :func:`launch`).
"""

from semseg.app.segment import ModelChoices, Segmentation, segment

__all__ = ["ModelChoices", "Segmentation", "segment"]
