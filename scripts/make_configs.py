#!/usr/bin/env python3
"""Writes the grid presets under configs/paper/ and configs/short/ (the paper's figures, METHOD.md
sections 2, 3 and 10). Each file only names what differs from its base (configs/paper.toml or
configs/short.toml), which carries every hyper-parameter with its reason.

    python3 scripts/make_configs.py        # from the repository root; rewrites the grid files
"""
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent / "configs"

ARCHS = {
    "resnet32": ("ResNet-32", None),
    "resnet32x2": ("ResNet-32x2", [32, 32, 64, 128]),
}

# (name, plan, groups, kind, what) in the order of the paper's figures.
RUNS = [("e2e", "1", 1, "e2e", "end-to-end backprop (K=1, G=1), the black square")]
RUNS += [(f"dgl-k{k}", str(k), 1, "dgl", f"DGL K={k} (G=1), green") for k in (2, 4, 8, 16)]
for g, ks, colour in ((2, (1, 2, 4, 8, 16), "blue"), (4, (1, 2, 4, 8), "yellow"), (8, (1, 2, 4), "brown")):
    RUNS += [(f"g{g}-k{k}", str(k), g, "gn", f"GN-DGL G={g} K={k}, {colour}") for k in ks]
RUNS += [(f"g{g}-1a", "1A", g, "1a", f"single-thread 1A, G={g}") for g in (2, 4, 8)]
RUNS += [(f"infopro-k{k}", str(k), 1, "infopro", f"InfoPro local loss, K={k} (G=1)") for k in (2, 4, 8, 16)]


def body(arch, plan, groups, kind):
    lines = []
    if ARCHS[arch][1]:
        lines.append(f"widths = {ARCHS[arch][1]}   # ResNet-32x2: every width doubled")
    lines.append(f'plan = "{plan}"')
    lines.append(f"groups = {groups}")
    if kind == "1a":
        lines += [
            "",
            "[aux_input]",
            'kind = "isolated"          # the single-thread runs: each classifier reads its own C/G channels',
            "",
            "[loss]",
            "diversity_weight = 0.0     # the single-thread runs train without the diversity term",
        ]
    if kind == "infopro":
        lines += [
            "",
            "[loss.infopro]",
            "# Wang et al. (ICLR 2021): a decoder reconstructs the image (BCE) beside the CE term; the",
            "# reference's default weights, equal at every depth.",
            "reconstruction = [1.0, 1.0]  # weight of the BCE term at the first and the last boundary",
            "classification = [1.0, 1.0]  # weight of the CE term at the first and the last boundary",
            "decoder_width = 12           # hidden channels of the decoder",
        ]
    return "\n".join(lines) + "\n"


def main():
    for budget in ("paper", "short"):
        out = ROOT / budget
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("*.toml"):
            old.unlink()
        for arch, (arch_name, _) in ARCHS.items():
            for name, plan, groups, kind, what in RUNS:
                head = f"# {arch_name}, {what}"
                if budget == "short":
                    head += "; short budget (configs/short.toml)"
                text = f"{head}.\nbase = \"{budget}\"\n\n" + body(arch, plan, groups, kind)
                (out / f"{arch}-{name}.toml").write_text(text)


if __name__ == "__main__":
    main()
