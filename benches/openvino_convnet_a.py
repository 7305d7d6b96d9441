"""OpenVINO baseline for `cargo xtask bench-packed --model A`: ConvNet Model A (VGG-small class:
2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-1024FC-1024FC-10FC) at W1A1, built with OpenVINO's own
graph API so that its CPU plugin turns every binary layer into its AVX-512 BinaryConvolution,
next to the same network in fp32, both timed in this process.

Graph per hidden layer: a Convolution whose weights are constants in {-1, +1} reading the
previous FakeQuantize (OpenVINO's ConvToBinaryConv pass makes it a BinaryConvolution), MaxPool
where the model has one, then BatchNorm + sign as one FakeQuantize(levels=2, output -1/+1)
with per-channel thresholds, the form OpenVINO fuses into the binary convolution's output.
The FC layers are 1x1 convolutions on the flattened features (so they binarize too). The
first conv reads the float image (+-1 weights, fp32 conv), as in our export. Weights and
BatchNorm parameters are random: only the speed is compared.

    python3 -m venv /tmp/ovenv && /tmp/ovenv/bin/pip install openvino numpy
    /tmp/ovenv/bin/python benches/openvino_convnet_a.py --threads 1 --json ov.json

Prints ms per image at batch 1 and 64 for the binary and the fp32 graph (median of
--repeats runs of at least --min-ms each) and which layer types the compiled binary model runs.
"""

import argparse
import json
import time

import numpy as np
import openvino as ov
import openvino.opset13 as ops


def build(batch, binary, rng):
    x = ops.parameter([batch, 3, 32, 32], np.float32, name="image")
    h = x
    c_in = 3
    plan = [(128, False), (128, True), (256, False), (256, True), (512, False), (512, True)]
    for i, (c_out, pool) in enumerate(plan):
        w = np.sign(rng.standard_normal((c_out, c_in, 3, 3))).astype(np.float32)
        w[w == 0] = 1
        h = ops.convolution(h, ops.constant(w), [1, 1], [1, 1], [1, 1], [1, 1])
        if pool:
            h = ops.max_pool(h, [2, 2], [1, 1], [0, 0], [0, 0], [2, 2]).output(0)
        scale = (rng.uniform(0.5, 1.5, (1, c_out, 1, 1)) / np.sqrt(9 * c_in)).astype(np.float32)
        shift = rng.uniform(-0.5, 0.5, (1, c_out, 1, 1)).astype(np.float32)
        if binary:
            # BatchNorm + sign as one per-channel threshold (positive BN scales): the form
            # OpenVINO fuses into the binary convolution's output ("binarization" post-op).
            thr = (-shift / scale).astype(np.float32)
            h = ops.fake_quantize(h, ops.constant(thr), ops.constant(thr), np.float32(-1),
                                  np.float32(1), 2)
        else:
            h = ops.add(ops.multiply(h, ops.constant(scale)), ops.constant(shift))
            h = ops.clamp(h, -1.0, 1.0)
        c_in = c_out
    # 4x4x512 features -> FC as 1x1 convolutions on a [batch, 8192, 1, 1] tensor.
    h = ops.reshape(h, ops.constant(np.array([batch, c_in * 16, 1, 1], dtype=np.int64)), False)
    c_in = c_in * 16
    for j, c_out in enumerate([1024, 1024, 10]):
        w = np.sign(rng.standard_normal((c_out, c_in, 1, 1))).astype(np.float32)
        w[w == 0] = 1
        h = ops.convolution(h, ops.constant(w), [1, 1], [0, 0], [0, 0], [1, 1])
        scale = (rng.uniform(0.5, 1.5, (1, c_out, 1, 1)) / np.sqrt(c_in)).astype(np.float32)
        shift = rng.uniform(-0.5, 0.5, (1, c_out, 1, 1)).astype(np.float32)
        if binary and j < 2:
            thr = (-shift / scale).astype(np.float32)
            h = ops.fake_quantize(h, ops.constant(thr), ops.constant(thr), np.float32(-1),
                                  np.float32(1), 2)
        else:
            h = ops.add(ops.multiply(h, ops.constant(scale)), ops.constant(shift))
            if j < 2:
                h = ops.clamp(h, -1.0, 1.0)
        c_in = c_out
    return ov.Model([h], [x], "convnet_a_" + ("w1a1" if binary else "fp32"))


def median_ms_per_img(request, x, batch, repeats, min_ms):
    request.infer({0: x})
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        calls = 0
        while calls == 0 or (time.perf_counter() - start) * 1e3 < min_ms:
            request.infer({0: x})
            calls += 1
        samples.append((time.perf_counter() - start) * 1e3 / (calls * batch))
    samples.sort()
    return samples[len(samples) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--min-ms", type=float, default=200.0)
    ap.add_argument("--json")
    args = ap.parse_args()
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": args.threads, "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_PRECISION_HINT": "f32"}
    rows = []
    print(f"OpenVINO {ov.__version__}, {args.threads} thread(s)")
    for batch in (1, 64):
        x = np.random.default_rng(1).standard_normal((batch, 3, 32, 32)).astype(np.float32)
        times = {}
        for binary in (True, False):
            model = build(batch, binary, np.random.default_rng(0))
            compiled = core.compile_model(model, "CPU", config)
            if binary and batch == 1:
                kinds = {}
                for node in compiled.get_runtime_model().get_ops():
                    t = node.get_rt_info()["layerType"].astype(str)
                    kinds[t] = kinds.get(t, 0) + 1
                print("compiled binary model layer types:", dict(sorted(kinds.items())))
            request = compiled.create_infer_request()
            times[binary] = median_ms_per_img(request, x, batch, args.repeats, args.min_ms)
        print(f"batch {batch:>2}: binary {times[True]:.3f} ms/img, fp32 {times[False]:.3f} "
              f"ms/img, speedup {times[False] / times[True]:.1f}x")
        rows.append({"engine": f"openvino {ov.__version__}", "model": "convnet-A", "batch": batch,
                     "threads": args.threads, "binary_ms_per_img": times[True],
                     "fp32_ms_per_img": times[False]})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
