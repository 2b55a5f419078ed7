#!/usr/bin/env python3
# Produces the golden fixtures of crates/groupwise/tests/lib/golden.rs. Command (from the repository root):
#
#   /root/.cache/groupwise-py/bin/python scripts/golden/make_golden.py crates/groupwise/tests/fixtures/golden
#
# (torch 2.11 CPU, safetensors 0.8). It is an independent PyTorch implementation of METHOD.md written the
# *reference way*: one network in one process, neuron groups as real grouped convolutions
# (`nn.Conv2d(..., groups=G)`), the auxiliary classifiers' stop-gradient input built by `.detach()`ing
# the other groups' slices of one full-width boundary tensor, all local losses and the head's loss summed
# and back-propagated ONCE, and one `torch.optim.SGD(nesterov=True)` over every parameter. The Rust
# library instead builds one narrow column per group with its own optimizer; the golden test checks that
# both compute the same thing.
#
# The reference values are computed in float64 from float32 initial values (the network is deep, with
# BN and ReLU: float32 rounding flips a few ReLU masks and moves the early layers' gradients by up to a
# few percent, in PyTorch itself, so float32-vs-float32 comparisons of parameters cannot be held to
# 1e-5; the Rust test runs the network in float64 for those, and compares losses of a float32 run
# with PyTorch's float32 losses). `pytorch_float32_worst_rel_err` in the JSON records how far PyTorch's
# own float32 run lands from the float64 values.
#
# Fixtures written (all small):
#   <case>.safetensors  init.<name>   every tensor of the Rust network before training, in the Rust
#                                     checkpoint naming (m{k}.g{g}.<layer>..., head.<layer>...), float32
#                       input.images  [8, 3, 32, 32] float32;  input.labels [8] int64
#                       step1.<name>, step2.<name>  the same tensors after one and two SGD steps
#                                     (computed in float64, stored as float32)
#                       logits1.m{k}.g{g}  aux[k][g] logits of step 1 (train mode);  logits1.head
#                       logits1_float32.*  the same from PyTorch's float32 run
#   <case>.json         per step: L_k per boundary, CE per unit, L_div per boundary, head CE, total
#                       ("steps": float64; "steps_float32": PyTorch's float32 run)
#   diversity.json      L_div alone (G=3, B=5, C=7): float32 logits, labels, value and d L_div / d z_g
#                       computed in float64, and PyTorch's own float32 error on that gradient
#   schedule.json       METHOD.md section 5 learning rates, lr0 = 0.8, E = 160, e = 1..160
#
# Cases: "k4g2" (ResNet-32 structure, widths [8,8,16,32], plan K=4 (1,2),(2,1),(3,0),(3,4), G=2,
# stop-gradient auxiliary input), "k1g1" (plan 1, G=1: end-to-end through the head), "k2g1" (plan 2,
# G=1: DGL, boundaries (2,1),(3,4), no diversity term). lr = 0.1, two consecutive steps on one batch.
#
# The initial weights follow METHOD.md section 1 except that BN gamma/beta and running statistics are
# randomised (gamma in [0.5, 1.5], beta ~ N(0, 0.1), running_mean ~ N(0, 0.1), running_var in
# [0.5, 1.5]) so that a wrongly sliced BN channel is caught already at step 1.

import copy
import json
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

LAMBDA = 0.5
TEMPERATURE = 3.0
LR = 0.1
BATCH = 8
WIDTHS = [8, 8, 16, 32]
BLOCKS = 5  # n: ResNet-32
IN_CHANNELS = 3
IMAGE = 32
CLASSES = 10


def init_conv(conv):
    k = conv.kernel_size[0]
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (k * k * conv.out_channels)))


def init_linear(lin):
    bound = 1.0 / math.sqrt(lin.in_features)
    nn.init.uniform_(lin.weight, -bound, bound)
    nn.init.uniform_(lin.bias, -bound, bound)


def init_bn(bn):
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_(0.0, 0.1)
        bn.running_mean.normal_(0.0, 0.1)
        bn.running_var.uniform_(0.5, 1.5)


def conv_bn(cin, cout, k, stride, groups):
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False, groups=groups)
    bn = nn.BatchNorm2d(cout)  # eps 1e-5, momentum 0.1
    init_conv(conv)
    init_bn(bn)
    return conv, bn


class Stem(nn.Module):
    """conv3x3 dense over the input channels, BN, ReLU (group g owns output rows of its slice)."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv, self.bn = conv_bn(cin, cout, 3, 1, 1)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Shortcut(nn.Module):
    def __init__(self, cin, cout, stride, groups):
        super().__init__()
        self.conv, self.bn = conv_bn(cin, cout, 1, stride, groups)

    def forward(self, x):
        return self.bn(self.conv(x))


class Block(nn.Module):
    """BasicBlock. conv2 is grouped; conv1 and the 1x1 shortcut are grouped unless `dense`."""

    def __init__(self, cin, cout, stride, groups, dense):
        super().__init__()
        g1 = 1 if dense else groups
        self.conv1, self.bn1 = conv_bn(cin, cout, 3, stride, g1)
        self.conv2, self.bn2 = conv_bn(cout, cout, 3, 1, groups)
        self.shortcut = Shortcut(cin, cout, stride, g1) if (stride != 1 or cin != cout) else None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        sc = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + sc)


class C1c2f(nn.Module):
    def __init__(self, cin, hidden, classes):
        super().__init__()
        self.conv, self.bn = conv_bn(cin, 2 * cin, 3, 2, 1)
        self.fc1 = nn.Linear(2 * cin, hidden)
        self.fc2 = nn.Linear(hidden, classes)
        init_linear(self.fc1)
        init_linear(self.fc2)

    def forward(self, x):
        h = F.relu(self.bn(self.conv(x)))
        h = h.mean(dim=(2, 3))
        return self.fc2(F.relu(self.fc1(h)))


def position(stage, block):
    return 0 if stage == 0 else 1 + (stage - 1) * BLOCKS + block


def stage_block(pos):
    if pos == 0:
        return 0, 0
    return 1 + (pos - 1) // BLOCKS, (pos - 1) % BLOCKS


class Net(nn.Module):
    def __init__(self, boundaries, groups):
        super().__init__()
        self.groups = groups
        self.boundaries = [position(s, b) for s, b in boundaries]
        positions = 1 + 3 * BLOCKS
        layers = [Stem(IN_CHANNELS, WIDTHS[0])]
        channels = WIDTHS[0]
        self.out_channels = [WIDTHS[0]]
        for pos in range(1, positions):
            stage, block = stage_block(pos)
            stride = 2 if stage > 1 and block == 0 else 1
            width = WIDTHS[stage]
            dense = (pos - 1) in self.boundaries  # first block after a boundary
            layers.append(Block(channels, width, stride, groups, dense))
            channels = width
            self.out_channels.append(width)
        self.layers = nn.ModuleList(layers)
        hidden = 128 * WIDTHS[0] // 16
        self.aux = nn.ModuleList(
            nn.ModuleList(C1c2f(self.out_channels[p], hidden, CLASSES) for _ in range(groups))
            for p in self.boundaries
        )
        self.head = C1c2f(channels, hidden, CLASSES)

    def module_of(self, pos):
        return sum(1 for b in self.boundaries if b < pos)

    def module_positions(self, k):
        start = 0 if k == 0 else self.boundaries[k - 1] + 1
        end = self.boundaries[k] if k < len(self.boundaries) else len(self.layers) - 1
        return range(start, end + 1)


def diversity(zs, labels):
    """METHOD.md section 4, written as the explicit double sum over g != h."""
    G = len(zs)
    B = labels.shape[0]
    if G < 2:
        return zs[0].new_zeros(())
    rows = []
    for z in zs:
        p = F.softmax(z / TEMPERATURE, dim=1)
        mask = 1.0 - F.one_hot(labels, z.shape[1]).to(p.dtype)
        p = p * mask
        p = p / (p.sum(dim=1, keepdim=True) + 1e-8)
        p = p / torch.sqrt((p * p).sum(dim=1, keepdim=True) + 1e-8)
        rows.append(p)
    total = zs[0].new_zeros(())
    for g in range(G):
        for h in range(G):
            if g != h:
                total = total + (rows[g] * rows[h]).sum()
    return total / (B * G * (G - 1))


def train_step(net, opt, images, labels):
    """The reference step: every loss summed, ONE backward, one SGD step over all parameters."""
    G = net.groups
    x = images
    total = images.new_zeros(())
    rec = {"module_loss": [], "unit_ce": [], "diversity": []}
    logits = {}
    for k in range(len(net.boundaries)):
        h = x
        for pos in net.module_positions(k):
            h = net.layers[pos](h)
        s = h.shape[1] // G
        zs = []
        for g in range(G):
            parts = [h[:, j * s:(j + 1) * s] if j == g else h[:, j * s:(j + 1) * s].detach()
                     for j in range(G)]
            z = net.aux[k][g](torch.cat(parts, dim=1))
            zs.append(z)
            logits[f"m{k}.g{g}"] = z.detach().clone()
        ces = [F.cross_entropy(z, labels) for z in zs]
        div = diversity(zs, labels)
        lk = sum(ces) + LAMBDA * div
        total = total + lk
        rec["module_loss"].append(lk.item())
        rec["unit_ce"].append([c.item() for c in ces])
        rec["diversity"].append(div.item())
        x = h.detach()
    for pos in net.module_positions(len(net.boundaries)):
        x = net.layers[pos](x)
    zh = net.head(x)
    head_ce = F.cross_entropy(zh, labels)
    total = total + head_ce
    logits["head"] = zh.detach().clone()
    rec["head_ce"] = head_ce.item()
    rec["total"] = total.item()
    opt.zero_grad()
    total.backward()
    opt.step()
    return rec, logits


def rust_tensors(net):
    """Every parameter and BN statistic under its Rust checkpoint name, split into group slices."""
    G = net.groups
    K = len(net.boundaries)
    out = {}
    for pos, layer in enumerate(net.layers):
        k = net.module_of(pos)
        stage, block = stage_block(pos)
        lname = "stem" if pos == 0 else f"s{stage}.b{block}"
        for pname, t in layer.state_dict().items():
            if pname.endswith("num_batches_tracked"):
                continue
            rows = t.shape[0] // G
            for g in range(G):
                out[f"m{k}.g{g}.{lname}.{pname}"] = t[g * rows:(g + 1) * rows].detach().clone()
    for k in range(K):
        for g in range(G):
            for pname, t in net.aux[k][g].state_dict().items():
                if not pname.endswith("num_batches_tracked"):
                    out[f"m{k}.g{g}.aux.{pname}"] = t.detach().clone()
    for pname, t in net.head.state_dict().items():
        if not pname.endswith("num_batches_tracked"):
            out[f"head.{pname}"] = t.detach().clone()
    return out


def worst_rel(got, want):
    """max |got - want| / max(|want|, 1e-3 * max|want|) over every tensor (the Rust test's measure)."""
    worst = 0.0
    for n, w in want.items():
        w = w.double()
        floor = max(1e-3 * w.abs().max().item(), 1e-30)
        worst = max(worst, ((got[n].double() - w).abs() / w.abs().clamp_min(floor)).max().item())
    return worst


def make_case(outdir, name, plan_name, boundaries, groups, seed):
    torch.manual_seed(seed)
    net = Net(boundaries, groups)
    net.train()
    images = torch.randn(BATCH, IN_CHANNELS, IMAGE, IMAGE)
    labels = torch.randint(0, CLASSES, (BATCH,), dtype=torch.int64)
    tensors = {f"init.{n}": t for n, t in rust_tensors(net).items()}
    tensors["input.images"] = images.clone()
    tensors["input.labels"] = labels.clone()

    # The reference values: the same float32 initial values, computed in float64.
    net64 = copy.deepcopy(net).double()
    opt = torch.optim.SGD(net64.parameters(), lr=LR, momentum=0.9, weight_decay=1e-4, nesterov=True)
    steps, after64 = [], []
    for step in (1, 2):
        rec, logits = train_step(net64, opt, images.double(), labels)
        steps.append(rec)
        after64.append(rust_tensors(net64))
        tensors.update({f"step{step}.{n}": t.float() for n, t in after64[-1].items()})
        if step == 1:
            tensors.update({f"logits1.{n}": t.float() for n, t in logits.items()})

    # PyTorch in float32, for the losses of a float32 run and to measure float32's own error.
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=0.9, weight_decay=1e-4, nesterov=True)
    steps32, f32_err = [], []
    for step in (1, 2):
        rec, logits = train_step(net, opt, images, labels)
        steps32.append(rec)
        if step == 1:
            tensors.update({f"logits1_float32.{n}": t for n, t in logits.items()})
        f32_err.append(worst_rel(rust_tensors(net), after64[step - 1]))

    tensors = {n: t.contiguous() for n, t in tensors.items()}
    save_file(tensors, os.path.join(outdir, f"{name}.safetensors"))
    meta = {
        "plan": plan_name,
        "boundaries": [list(b) for b in boundaries],
        "groups": groups,
        "aux_input": "stop-gradient",
        "widths": WIDTHS,
        "blocks_per_stage": BLOCKS,
        "in_channels": IN_CHANNELS,
        "image_size": IMAGE,
        "classes": CLASSES,
        "lr": LR,
        "lambda": LAMBDA,
        "temperature": TEMPERATURE,
        "steps": steps,
        "steps_float32": steps32,
        "pytorch_float32_worst_rel_err": f32_err,
    }
    with open(os.path.join(outdir, f"{name}.json"), "w") as f:
        json.dump(meta, f, indent=1)
    n_params = sum(p.numel() for p in net.parameters())
    print(f"{name}: {n_params} parameters, total loss per step {[round(s['total'], 6) for s in steps]}, "
          f"PyTorch float32 vs float64 worst relative error per step {f32_err}")


def make_diversity(outdir, seed):
    torch.manual_seed(seed)
    G, B, C = 3, 5, 7
    zs32 = [2.0 * torch.randn(B, C) for _ in range(G)]
    labels = torch.randint(0, C, (B,), dtype=torch.int64)
    zs = [z.double().requires_grad_(True) for z in zs32]
    value = diversity(zs, labels)
    value.backward()
    # PyTorch's own float32 error on the gradient, off the true-class entries (zero in exact arithmetic),
    # relative to max(|g|, floor * max|g|), for floors 1e-3 and 1e-2.
    zf = [z.clone().requires_grad_(True) for z in zs32]
    diversity(zf, labels).backward()
    off = 1.0 - F.one_hot(labels, C).double()
    f32_err = {}
    for floor in (1e-3, 1e-2):
        worst = 0.0
        for a, b in zip(zf, zs):
            want = b.grad * off
            den = want.abs().clamp_min(floor * want.abs().max().item())
            worst = max(worst, ((a.grad.double() * off - want).abs() / den).max().item())
        f32_err[str(floor)] = worst
    meta = {
        "groups": G,
        "batch": B,
        "classes": C,
        "temperature": TEMPERATURE,
        "logits": [z.tolist() for z in zs32],
        "labels": labels.tolist(),
        "value": value.item(),
        "grad": [z.grad.tolist() for z in zs],
        "pytorch_float32_grad_worst_rel_err": f32_err,
    }
    with open(os.path.join(outdir, "diversity.json"), "w") as f:
        json.dump(meta, f)
    print(f"diversity: {value.item():.8f}, PyTorch float32 gradient error by floor {f32_err}")


def make_schedule(outdir):
    lr0, E = 0.8, 160
    lrs = []
    for e in range(1, E + 1):
        c = 0.5 * lr0 * (1 + math.cos(math.pi * e / E))
        lrs.append(c * (e - 1) / 10 + 0.01 * (11 - e) / 10 if e <= 10 else c)
    with open(os.path.join(outdir, "schedule.json"), "w") as f:
        json.dump({"lr0": lr0, "epochs": E, "warmup_epochs": 10, "lr": lrs}, f)


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else "crates/groupwise/tests/fixtures/golden"
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)
    make_case(outdir, "k4g2", "4", [(1, 2), (2, 1), (3, 0), (3, 4)], 2, seed=1)
    make_case(outdir, "k1g1", "1", [], 1, seed=2)
    make_case(outdir, "k2g1", "2", [(2, 1), (3, 4)], 1, seed=3)
    make_diversity(outdir, seed=4)
    make_schedule(outdir)


if __name__ == "__main__":
    main()
