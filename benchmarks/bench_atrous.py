"""What a dilated (atrous) 3x3 convolution costs each runtime on this CPU: DeepLabV3's ASPP at CamVid size.

DeepLabV3-ResNet50 on a 360x480 image has 45x60 features at output stride 8; its ASPP
convolves 2048 channels to 256 with 3x3 kernels at dilations 12, 24 and 36, where many of
the nine taps read only zero padding (at 36, 28% of the multiply-adds touch the image).
A runtime that skips those taps does that much less work. This times one such
convolution per dilation in PyTorch (NCHW and channels_last) and ONNX Runtime, each
setting in turns, and reports GFLOP/s over the dense count (all nine taps) and over the
taps that read the image, which shows how close each runtime is to the CPU's peak.

    OMP_NUM_THREADS=2 python benchmarks/bench_atrous.py [--dilations 1 12 24 36] [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import io
import os
import statistics
import time

import torch
from torch import nn

from bench_int8 import cpu_flags


def useful_fraction(dilation: int, height: int, width: int) -> float:
    """The share of a 3x3 'same' convolution's multiply-adds whose input lies inside the image."""

    def along(size: int) -> float:
        return (size + 2 * max(size - dilation, 0)) / (3 * size)

    return along(height) * along(width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dilations", type=int, nargs="+", default=[1, 12, 24, 36])
    parser.add_argument("--channels", type=int, nargs=2, default=[2048, 256], metavar=("IN", "OUT"))
    parser.add_argument("--size", type=int, nargs=2, default=[45, 60], metavar=("H", "W"), help="feature map size")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import onnxruntime as ort

    threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))
    torch.set_num_threads(threads)
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}; {cpu_flags()}; {threads} threads; "
          f"torch {torch.__version__}, onnxruntime {ort.__version__}")
    cin, cout = args.channels
    height, width = args.size
    x = torch.randn(1, cin, height, width)
    dense_gflop = 2 * 9 * cin * cout * height * width / 1e9
    print(f"{cin}->{cout} 3x3 on {height}x{width}: {dense_gflop:.1f} GFLOP with all nine taps\n")
    print("| dilation | taps in the image | torch NCHW ms | torch channels_last ms | ONNX Runtime ms "
          "| ONNX Runtime GFLOP/s (dense / in-image) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for dilation in args.dilations:
        conv = nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False).eval()
        buffer = io.BytesIO()
        torch.onnx.export(conv, (x,), buffer, dynamo=False, input_names=["x"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        conv_cl = copy.deepcopy(conv).to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        x_np = x.numpy()
        runs = {
            "torch": lambda: conv(x),
            "torch_cl": lambda: conv_cl(x_cl),
            "ort": lambda: session.run(None, {"x": x_np}),
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        with torch.no_grad():
            for run in runs.values():  # warm-up
                run()
            for _ in range(args.repeats):  # in turns, so that a slower moment of the machine hits all alike
                for name, run in runs.items():
                    start = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - start)
        ms = {name: 1000 * statistics.median(values) for name, values in times.items()}
        useful = useful_fraction(dilation, height, width)
        ort_rate = dense_gflop / (ms["ort"] / 1000)
        print(f"| {dilation} | {100 * useful:.0f}% | {ms['torch']:.0f} | {ms['torch_cl']:.0f} | {ms['ort']:.0f} "
              f"| {ort_rate:.0f} / {ort_rate * useful:.0f} |")


if __name__ == "__main__":
    main()
