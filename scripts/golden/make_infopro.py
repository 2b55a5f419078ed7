#!/usr/bin/env python3
# Produces crates/groupwise/tests/fixtures/golden/infopro.{safetensors,json} for the InfoPro test in
# crates/groupwise/tests/lib/golden.rs. Command (from the repository root):
#
#   /root/.cache/groupwise-py/bin/python scripts/golden/make_infopro.py crates/groupwise/tests/fixtures/golden
#
# (torch 2.11 CPU, safetensors 0.8). An independent PyTorch version of InfoPro's decoder loss (Wang et
# al., ICLR 2021) written like the GN-DGL reference's `Decoder`: F.interpolate(bilinear,
# align_corners=True) to the image size, Conv2d(C, 12, 3, padding 1) with bias, BatchNorm2d, ReLU,
# Conv2d(12, 3, 3, padding 1) with bias, Sigmoid, then nn.BCELoss against the image in [0, 1].
# One forward and backward in training mode, in float64 (the Rust test runs float64 too):
#   init.<name>        decoder parameters and BN buffers before the step (BN randomised so a wrong
#                      channel order shows), Rust names: conv1.{weight,bias}, bn.{weight,bias,
#                      running_mean,running_var}, conv2.{weight,bias}
#   input.features     [4, 6, 8, 8];  input.target [4, 3, 16, 16] in [0, 1]
#   output             the reconstruction [4, 3, 16, 16]
#   grad.<name>        d loss / d parameter;  grad.features  d loss / d features
#   after.bn.running_mean, after.bn.running_var   BN buffers after the training-mode forward
# infopro.json: {"loss": BCE value}

import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file


class Decoder(nn.Module):
    def __init__(self, cin, width, channels, size):
        super().__init__()
        self.size = size
        self.conv1 = nn.Conv2d(cin, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x):
        x = F.interpolate(x, size=[self.size, self.size], mode="bilinear", align_corners=True)
        return torch.sigmoid(self.conv2(F.relu(self.bn(self.conv1(x)))))


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else "crates/groupwise/tests/fixtures/golden"
    torch.manual_seed(5)
    dec = Decoder(6, 12, 3, 16).double()
    with torch.no_grad():
        dec.bn.weight.uniform_(0.5, 1.5)
        dec.bn.bias.normal_(0, 0.1)
        dec.bn.running_mean.normal_(0, 0.1)
        dec.bn.running_var.uniform_(0.5, 1.5)
    init = {f"init.{k}": v.detach().clone() for k, v in dec.state_dict().items() if "num_batches" not in k}
    features = torch.randn(4, 6, 8, 8, dtype=torch.float64, requires_grad=True)
    target = torch.rand(4, 3, 16, 16, dtype=torch.float64)
    out = dec(features)
    loss = nn.BCELoss()(out, target)
    loss.backward()
    tensors = dict(init)
    tensors["input.features"] = features.detach()
    tensors["input.target"] = target
    tensors["output"] = out.detach()
    tensors["grad.features"] = features.grad
    for name, p in dec.named_parameters():
        tensors[f"grad.{name}"] = p.grad
    tensors["after.bn.running_mean"] = dec.bn.running_mean.clone()
    tensors["after.bn.running_var"] = dec.bn.running_var.clone()
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(outdir, "infopro.safetensors"))
    with open(os.path.join(outdir, "infopro.json"), "w") as f:
        json.dump({"loss": loss.item()}, f)
    print(f"infopro: BCE {loss.item():.10f}")


if __name__ == "__main__":
    main()
