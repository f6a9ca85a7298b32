"""Benchmark: our batched evaluator vs the official one-example-at-a-time generation.

    python benchmarks/evaluator_speed.py --model runs/demo/target --data runs/demo/data
    python benchmarks/evaluator_speed.py            # builds the default target first (~3 min)

Both generate greedily for every forget and retain row (max_new_tokens 256, stop at EOS) and
are scored the official way; the table shows examples/second, the speed-up, and whether every
generation and the scores are identical.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from unlearn import load_rows
from unlearn.evaluator.evaluate import eval_split
from unlearn.evaluator.generation import greedy_generate
from unlearn.evaluator.metrics import row_score


def one_at_a_time(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    """What the official script did: one prompt, no padding, model.generate."""
    out = []
    for p in prompts:
        ids = tokenizer(p, return_tensors="pt").input_ids
        gen = model.generate(
            ids,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        out.append(tokenizer.decode(gen[0, ids.shape[1] :], skip_special_tokens=True))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, data = args.model, args.data
        if model_dir is None:
            from unlearn.bench.synth import generate
            from unlearn.bench.target import build_target

            data = Path(tmp) / "data"
            generate(data)
            model_dir = Path(tmp) / "target"
            build_target(data, model_dir, progress=False)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        rows = load_rows(eval_split(data, "forget", "train")) + load_rows(eval_split(data, "retain", "train"))
        prompts = [r.input for r in rows]
        timings, outputs = {}, {}
        for name, fn in (
            ("one at a time (official)", lambda: one_at_a_time(model, tokenizer, prompts, args.max_new_tokens)),
            (
                f"batched, batch {args.batch_size}",
                lambda: greedy_generate(model, tokenizer, prompts, args.max_new_tokens, args.batch_size),
            ),
        ):
            started = time.time()
            outputs[name] = fn()
            timings[name] = time.time() - started
    names = list(timings)
    scores = {n: [row_score(r.id, r.output, g) for r, g in zip(rows, outputs[n])] for n in names}
    same_text = outputs[names[0]] == outputs[names[1]]
    print(
        f"\n{len(rows)} forget+retain rows, max_new_tokens {args.max_new_tokens}, "
        f"torch threads {torch.get_num_threads()}\n"
    )
    print("| evaluator | seconds | examples/s | speed-up | mean score |")
    print("| --- | --- | --- | --- | --- |")
    for n in names:
        print(
            f"| {n} | {timings[n]:.1f} | {len(rows) / timings[n]:.1f} | {timings[names[0]] / timings[n]:.1f}x | "
            f"{sum(scores[n]) / len(rows):.4f} |"
        )
    print(f"\nidentical generations: {same_text}; identical scores: {scores[names[0]] == scores[names[1]]}")


if __name__ == "__main__":
    main()
