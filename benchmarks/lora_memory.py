"""Benchmark: peak memory of NPO+KL with and without LoRA, on the default tiny target and on
wider untrained OLMo models with the same tokenizer (memory does not depend on what a model
knows, so no memorisation is needed).

    python benchmarks/lora_memory.py                       # reuses runs/bench/{data,target} (see methods.py)
    python benchmarks/lora_memory.py --sizes 192x4,1024x8 --steps 4

Without LoRA NPO+KL holds the trained weights, their gradients, two Adam moments and a frozen
reference copy; with LoRA it holds one frozen copy (the reference is the adapter switched off)
and the small adapters' state. Each run is its own process; prints one Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from methods import measure  # noqa: E402  (the benchmarks share the measured-process helper)


def model_of_size(target: Path, folder: Path, hidden: int, layers: int) -> Path:
    """The target if it has this size, else an untrained OLMo of it with the target's tokenizer."""
    from transformers import AutoConfig, AutoTokenizer

    from unlearn.bench.target import TargetSettings, new_model

    config = AutoConfig.from_pretrained(target)
    if (config.hidden_size, config.num_hidden_layers) == (hidden, layers):
        return target
    if not (folder / "config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(target)
        settings = TargetSettings(
            hidden_size=hidden, layers=layers, heads=max(1, hidden // 64), intermediate_size=4 * hidden
        )
        new_model(settings, tokenizer).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/bench"))
    parser.add_argument(
        "--sizes", default="192x4,1024x8", help="hidden x layers, comma-separated (192x4 is the default target)."
    )
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rank", type=int, default=32, help="LoRA rank (ZJUKLAB: 32); alpha = rank.")
    args = parser.parse_args()
    data, target = args.work / "data", args.work / "target"
    if not (target / "config.json").is_file():
        raise SystemExit(f"{target}: build it first with `python benchmarks/methods.py` or `unlearn target build`")
    rows = []
    for size in args.sizes.split(","):
        hidden, layers = (int(x) for x in size.split("x"))
        model = model_of_size(target, args.work / f"olmo_{size}", hidden, layers)
        for lora in (False, True):
            cmd = [
                "run",
                "--method",
                "npo",
                "--model",
                str(model),
                "--data",
                str(data),
                "-o",
                str(args.work / f"mem_{size}_{int(lora)}"),
                "--max-steps",
                str(args.steps),
                "--overwrite",
                "--set",
                "config.npo.retain_kl_weight=1.0",
                "--set",
                "trainer.progress=false",
            ]
            if lora:
                cmd += [
                    "--with",
                    "lora",
                    "--set",
                    f"config.lora.rank={args.rank}",
                    "--set",
                    f"config.lora.alpha={args.rank}",
                ]
            res, wall, rss, heap = measure(cmd)
            if res.returncode != 0:
                raise SystemExit(res.stderr[-2000:])
            rows.append((size, "npo+kl+lora" if lora else "npo+kl", wall, rss, heap))
    print(f"\nNPO + KL(retain), {args.steps} steps, batch 4, LoRA rank {args.rank} on every linear layer but lm_head\n")
    print("| model (hidden x layers) | run | wall s | peak RSS MB | peak heap MB |")
    print("| --- | --- | --- | --- | --- |")
    for size, label, wall, rss, heap in rows:
        print(f"| {size} | {label} | {wall:.0f} | {rss:.0f} | {heap:.0f} |")


if __name__ == "__main__":
    main()
