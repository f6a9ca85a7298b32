"""Benchmark: our evaluator against the organisers' one-example-at-a-time procedure.

    python benchmarks/evaluator_speed.py                       # builds the default target (~3 min)
    python benchmarks/evaluator_speed.py --model runs/demo/target --data runs/demo/data
    python benchmarks/evaluator_speed.py --lume ../shared/data/lume --lume-max-new-tokens 32
    python benchmarks/evaluator_speed.py --model MODEL --data DATA --device cuda   # on a GPU: is
        # batching bit-for-bit there too (the "batching" note says), and how much faster

For each dtype and row set, the organisers' way (``model.generate`` on one unpadded prompt,
greedy, then ``model(ids, labels=ids).loss`` on one MIA document at a time) against ours
(float32: batches of equal-length rows as `unlearn evaluate` runs by default; bfloat16: the
``--official`` preset, which batches only where `batch_invariant` holds on this machine). The
table gives seconds (generation and MIA apart), rows per second, the speed-ups, the floors
(reading every prompt once, and one forward pass per MIA document: work any exact evaluator
does, the organisers' loop included), the "ceiling" (the organisers' total over those floors: the
best speed-up an evaluator that keeps every bit could reach on this machine), and how many
generated token sequences and MIA losses differ from the organisers' in any bit (must be 0). The
public LUME rows are not memorised by the tiny target, so their generation is capped.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from unlearn import load_rows
from unlearn.engine import resolve_device
from unlearn.evaluator.evaluate import batching, eval_split
from unlearn.evaluator.generation import greedy_tokens, length_batches, stop_tokens
from unlearn.evaluator.mia import document_scores


def organisers(model, tokenizer, prompts: list[str], docs: list[str], max_new_tokens: int):
    """Their inference and MIA loops: one prompt / document at a time, no padding."""
    tokens, losses, started = [], [], time.time()
    with torch.no_grad():
        for p in prompts:
            ids = tokenizer(p, return_tensors="pt").input_ids.to(model.device)
            out = model.generate(
                ids, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True, pad_token_id=tokenizer.eos_token_id
            )
            tokens.append(out[0, ids.shape[1] :].tolist())
        generation = time.time() - started
        for d in docs:
            ids = tokenizer(d, return_tensors="pt").input_ids.to(model.device)
            losses.append(model(ids, labels=ids).loss.item())
    return tokens, losses, generation, time.time() - started - generation


def ours(model, tokenizer, prompts: list[str], docs: list[str], max_new_tokens: int, batch_size: int, exact: bool):
    started = time.time()
    batch, note = batching(model, batch_size, exact)
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    tokens = greedy_tokens(model, encoded, max_new_tokens, batch, stop_tokens(model))
    generation = time.time() - started
    losses = [s["loss"] for s in document_scores(model, tokenizer, docs, batch_size=batch)]
    return tokens, losses, generation, time.time() - started - generation, note


@torch.no_grad()
def prefill_floor(model, tokenizer, prompts: list[str], batch_size: int) -> float:
    """Seconds to read every prompt once (equal lengths batched, last logits only): work that
    any exact evaluator does, one at a time or batched, before its first generated token."""
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    started = time.time()
    for rows in length_batches(encoded, batch_size):
        ids = torch.tensor([encoded[i] for i in rows], device=model.device)
        model(input_ids=ids, use_cache=False, logits_to_keep=1)
    return time.time() - started


@torch.no_grad()
def mia_floor(model, tokenizer, docs: list[str], batch_size: int) -> float:
    """Seconds of one forward pass per MIA document (equal lengths batched, no scoring): the
    least any exact MIA pass does, the organisers' included."""
    encoded = [tokenizer(d)["input_ids"] for d in docs]
    started = time.time()
    for rows in length_batches(encoded, batch_size):
        model(input_ids=torch.tensor([encoded[i] for i in rows], device=model.device), use_cache=False)
    return time.time() - started


def row_sets(model: Path, data: Path, lume: Path | None, extra: list[Path]) -> list[tuple[str, Path, Path]]:
    """(label, model, rows folder): the target on its data and on LUME, then any extra models."""
    sets = [("default target data", model, data)]
    if lume is not None and lume.is_dir():
        sets.append(("public LUME rows", model, lume))
    return sets + [(f"default data, model {m.name}", m, data) for m in extra]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--lume", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared/data/lume")
    parser.add_argument("--lume-max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument(
        "--extra-model",
        type=Path,
        action="append",
        default=[],
        help="Also a model on the default data (e.g. an unlearned one: its generations run long).",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (where to run both sides)")
    parser.add_argument("--json", type=Path, help="Also write the table's rows here.")
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
        table = []
        for dtype in args.dtypes.split(","):
            for name, path, folder in row_sets(model_dir, data, args.lume, args.extra_model):
                model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
                model.to(resolve_device(args.device)).eval()
                tokenizer = AutoTokenizer.from_pretrained(path)
                rows = [r for s in ("forget", "retain") for r in load_rows(eval_split(folder, s, "train"))]
                prompts = [r.input for r in rows]
                docs = [
                    json.loads(line)["document"]
                    for f in ("mia_member.jsonl", "mia_nonmember.jsonl")
                    for line in (folder / f).read_text().splitlines()
                    if line.strip()
                ]
                cap = args.lume_max_new_tokens if name.startswith("public LUME") else args.max_new_tokens
                ref_tokens, ref_losses, their_gen, their_mia = organisers(model, tokenizer, prompts, docs, cap)
                tokens, losses, our_gen, our_mia, note = ours(
                    model, tokenizer, prompts, docs, cap, args.batch_size, dtype != "float32"
                )
                table.append(
                    {
                        "rows": name,
                        "dtype": dtype + (" (--official)" if dtype != "float32" else ""),
                        "examples": len(prompts),
                        "documents": len(docs),
                        "max_new_tokens": cap,
                        "organisers_generation_s": round(their_gen, 1),
                        "ours_generation_s": round(our_gen, 1),
                        "generation_speed_up": round(their_gen / our_gen, 1),
                        "organisers_mia_s": round(their_mia, 2),
                        "ours_mia_s": round(our_mia, 2),
                        "examples_per_s": round(len(prompts) / (our_gen + our_mia), 1),
                        "speed_up": round((their_gen + their_mia) / (our_gen + our_mia), 1),
                        "prefill_floor_s": round(prefill_floor(model, tokenizer, prompts, args.batch_size), 1),
                        "mia_floor_s": round(mia_floor(model, tokenizer, docs, args.batch_size), 2),
                        "generations_differing": sum(a != b for a, b in zip(ref_tokens, tokens)),
                        "mia_losses_differing": sum(a != b for a, b in zip(ref_losses, losses)),
                        "batching": note,
                    }
                )
                floor = table[-1]["prefill_floor_s"] + table[-1]["mia_floor_s"]
                table[-1]["ceiling"] = round((their_gen + their_mia) / floor, 1)
                print(json.dumps(table[-1]), flush=True)
    where = resolve_device(args.device)
    machine = torch.cuda.get_device_name(where) if where.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n{machine}; batch size {args.batch_size}; single run per cell\n")
    print(
        "| rows | dtype | examples | new tokens | generation s: organisers / ours | MIA s: organisers / ours "
        "| examples/s | speed-up (generation, overall) | floor s: prefill, MIA | ceiling "
        "| generations differing | MIA losses differing |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in table:
        print(
            f"| {r['rows']} | {r['dtype']} | {r['examples']} | {r['max_new_tokens']} | "
            f"{r['organisers_generation_s']} / {r['ours_generation_s']} | "
            f"{r['organisers_mia_s']} / {r['ours_mia_s']} | "
            f"{r['examples_per_s']} | {r['generation_speed_up']}x, {r['speed_up']}x | "
            f"{r['prefill_floor_s']}, {r['mia_floor_s']} | {r['ceiling']}x | "
            f"{r['generations_differing']} of {r['examples']} | {r['mia_losses_differing']} of {r['documents']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
