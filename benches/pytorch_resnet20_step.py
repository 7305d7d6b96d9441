#!/usr/bin/env python3
"""Same-machine PyTorch baseline for `cargo xtask bench-train`: one ResNet-20 training step.

The network, batch and optimizer mirror the Rust benchmark: ResNet-20 with option-A shortcuts and
BatchNorm after the classifier, batch 128 of 32x32x3 inputs, SGD (lr 0.1, momentum 0.9, weight
decay 1e-4 on kernels), cross-entropy. `--bits 32/32` is the float network (ReLU); `--bits 1/1`
quantizes every conv/FC weight and every layer input but the image with AQE (alpha 0.75,
straight-through gradient gated to |x| <= 1, HardTanh activations, latent weights clipped).

Not run in CI. Usage (outside the repository's build, e.g. a virtualenv with torch installed):

    python3 benches/pytorch_resnet20_step.py --threads 1 --bits 32/32 --repeats 5
    python3 benches/pytorch_resnet20_step.py --threads 1 --bits 1/1

Prints one JSON object per run with keys model, bits, batch, threads, step_ms (median).
"""

import argparse
import json
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Aqe(torch.autograd.Function):
    """alpha * sign(x) + (1 - alpha) * x forward; dy * 1{|x| <= 1} backward (sign(0) = +1)."""

    @staticmethod
    def forward(ctx, x, alpha):
        ctx.save_for_backward(x)
        sign = torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))
        return alpha * sign + (1 - alpha) * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= 1).to(g.dtype), None


class QConv(nn.Conv2d):
    def __init__(self, *a, quant_input=True, quant=False, alpha=0.75, **k):
        super().__init__(*a, bias=False, **k)
        self.quant, self.quant_input, self.alpha = quant, quant_input, alpha

    def forward(self, x):
        w = Aqe.apply(self.weight, self.alpha) if self.quant else self.weight
        if self.quant and self.quant_input:
            x = Aqe.apply(x, self.alpha)
        return F.conv2d(x, w, None, self.stride, self.padding)


class Block(nn.Module):
    def __init__(self, cin, cout, stride, quant):
        super().__init__()
        self.c1 = QConv(cin, cout, 3, stride=stride, padding=1, quant=quant)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = QConv(cout, cout, 3, padding=1, quant=quant)
        self.b2 = nn.BatchNorm2d(cout)
        self.act = F.hardtanh if quant else F.relu
        self.pad = (cout - cin) // 2 if stride != 1 or cin != cout else None
        self.stride = stride

    def forward(self, x):
        h = self.act(self.b1(self.c1(x)))
        h = self.b2(self.c2(h))
        s = x
        if self.pad is not None:
            s = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.pad, self.pad))
        return self.act(h + s)


class ResNet20(nn.Module):
    def __init__(self, quant):
        super().__init__()
        self.stem = QConv(3, 16, 3, padding=1, quant=quant, quant_input=False)
        self.bn = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for stage, cout in enumerate([16, 32, 64]):
            for b in range(3):
                blocks.append(Block(cin, cout, 2 if stage > 0 and b == 0 else 1, quant))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, 10, bias=False)
        self.fc_bn = nn.BatchNorm1d(10)
        self.quant = quant
        self.act = F.hardtanh if quant else F.relu

    def forward(self, x):
        h = self.blocks(self.act(self.bn(self.stem(x))))
        h = h.mean((2, 3))
        if self.quant:
            h = Aqe.apply(h, 0.75)
            w = Aqe.apply(self.fc.weight, 0.75)
            return self.fc_bn(F.linear(h, w))
        return self.fc_bn(self.fc(h))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bits", default="32/32", choices=["32/32", "1/1"])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    quant = a.bits == "1/1"
    model = ResNet20(quant)
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    other = [p for n, p in model.named_parameters() if p.dim() <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 1e-4}, {"params": other, "weight_decay": 0}],
                          lr=0.1, momentum=0.9)
    x = torch.randn(a.batch, 3, 32, 32)
    y = torch.randint(0, 10, (a.batch,))
    times = []
    for i in range(a.warmup + a.repeats):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if quant:
            with torch.no_grad():
                for p in decay:
                    p.clamp_(-1, 1)
        if i >= a.warmup:
            times.append((time.perf_counter() - t) * 1e3)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"model": "resnet20", "bits": a.bits, "batch": a.batch, "threads": a.threads,
                      "step_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times),
                      "peak_mib": peak, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
