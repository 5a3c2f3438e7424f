"""The ``semseg app`` page (Gradio): pick or upload an image, choose the model, TTA and backend, and see
the image and its overlay side by side (a slider), the legend, the area of each class, and a label PNG
to download.

Gradio is an optional extra (``pip install 'semseg[app]'``), imported only here. The
server listens on 127.0.0.1 unless told otherwise, sends no analytics and loads no
web fonts (the page works offline).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from semseg.app.segment import ModelChoices, segment
from semseg.errors import SemsegError

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo"
AREA_COLUMNS = ["id", "class", "pixels", "share %"]


def _gradio() -> Any:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home
    try:
        import gradio
    except ImportError:
        raise SemsegError("semseg app needs Gradio: pip install 'semseg[app]'") from None
    return gradio


def sample_images() -> list[Path]:
    """The embedded demo frames the page offers as samples."""
    return sorted(p for split in ("val", "test") for p in (DEMO / split).glob("*.png"))


def build_app(models: ModelChoices, samples: Sequence[str | Path] | None = None) -> Any:
    """The Gradio Blocks of the page (not launched). Its API endpoint ``/segment`` takes
    (image, model label, TTA, backend) and returns (the image and overlay pair, legend, areas, label PNG file)."""
    gr = _gradio()
    samples = [str(p) for p in (sample_images() if samples is None else samples)]
    outputs_dir = Path(tempfile.mkdtemp(prefix="semseg-app-labels-"))

    def run(image: np.ndarray | None, label: str, tta: bool, backend: str) -> tuple[Any, ...]:
        if image is None:
            raise gr.Error("upload an image or pick a sample first")
        try:
            result = segment(models.predictor(label, backend, tta), image)
        except SemsegError as exc:  # shown on the page, as the CLI would print it
            raise gr.Error(str(exc)) from None
        path = outputs_dir / f"labels_{abs(hash((label, image.shape, result.labels.tobytes()))) % 10**10}.png"
        path.write_bytes(result.label_png)
        rows = [list(row) for row in result.areas]
        return (image[..., :3], result.overlay), result.legend, rows, str(path), models.describe(label)

    def backends(label: str) -> Any:
        choices = list(models.backends(label))
        return gr.update(choices=choices, value=choices[0])

    with gr.Blocks(title="semseg") as page:
        gr.Markdown("## semseg: segment an image\nUpload an image or pick a sample, choose a model, then **Segment**.")
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(type="numpy", label="image", sources=["upload", "clipboard"], elem_id="input-image")
                if samples:
                    gr.Examples(samples, inputs=[image], label="samples")
                model = gr.Dropdown(models.labels, value=models.labels[0], label="model", elem_id="model")
                with gr.Row():
                    tta = gr.Checkbox(False, label="TTA (flips and scales)", elem_id="tta")
                    backend = gr.Radio(list(models.backends(models.labels[0])), value=models.backends(models.labels[0])[0],
                                       label="backend", elem_id="backend")
                button = gr.Button("Segment", variant="primary", elem_id="segment")
            with gr.Column(scale=2):
                slider = gr.ImageSlider(label="image | overlay", type="numpy", elem_id="overlay")
                with gr.Row():
                    key = gr.Image(type="numpy", label="legend", elem_id="legend", interactive=False)
                    areas = gr.Dataframe(headers=AREA_COLUMNS, label="area per class", elem_id="areas", interactive=False)
                download = gr.File(label="label map (PNG, palette indices = class ids)", elem_id="labels")
                about = gr.Markdown(elem_id="about")
        model.change(backends, inputs=[model], outputs=[backend], api_name=False)
        button.click(run, inputs=[image, model, tta, backend], outputs=[slider, key, areas, download, about],
                     api_name="segment")
    return page


def launch(checkpoints: Sequence[str | Path] = (), onnx: Sequence[str | Path] = (), host: str = "127.0.0.1",
           port: int | None = None, device: str = "cpu", default_model: bool = True) -> None:
    """Serve the page on ``host:port`` (Gradio picks a free port from 7860 when ``port`` is None); blocks."""
    gr = _gradio()
    models = ModelChoices(checkpoints, onnx, default_model=default_model, device=device)
    page = build_app(models)
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])  # no web fonts: offline
    page.queue().launch(server_name=host, server_port=port, share=False, theme=theme, footer_links=["api"])
