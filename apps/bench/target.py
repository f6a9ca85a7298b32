"""``unlearn target build``: a tiny OLMo model trained from scratch until it has memorised a
LUME-format benchmark, the way the SemEval organisers fine-tuned their target on LUME.

It trains on every forget and retain row (both splits; ``input + output + EOS``, so greedy
answers stop) and on the utility questions, never on the MIA non-members. It stops when every
answer is reproduced exactly under teacher forcing (which is what greedy decoding then
returns), checkpoints each few epochs so an interrupted build resumes, and writes a standard
Hugging Face folder with a card of its memorisation figures.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from unlearn import Encoded, PairCollator, check_output, encode, load_rows, nll_from_logprobs, publish, token_logprobs
from unlearn.engine import resolve_device
from unlearn.evaluator import TARGET_CARD, rows_digest, training_rows

CARD_MD = "README.md"
EOS = "<|endoftext|>"
PAD = "<|padding|>"


class TargetSettings(BaseModel):
    """Size and training of the target model; the defaults memorise the ``small`` benchmark."""

    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(2048, ge=300, description="Byte-level BPE vocabulary trained on the data.")
    hidden_size: int = Field(192, ge=16)
    layers: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    intermediate_size: int = Field(768, ge=16)
    max_length: int = Field(512, ge=16, description="Tokens per training example (longer ones are cut).")
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    warmup_steps: int = Field(50, ge=0)
    max_epochs: int = Field(300, ge=1)
    check_every: int = Field(5, ge=1, description="Epochs between memorisation checks (and checkpoints).")
    target_accuracy: float = Field(
        1.0, gt=0, le=1, description="Stop when this fraction of rows is reproduced exactly under teacher forcing."
    )
    seed: int = 0


def train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer (GPT-2 style pre-tokenisation) with EOS and PAD tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD)


def new_model(settings: TargetSettings, tokenizer: Any) -> torch.nn.Module:
    from transformers import OlmoConfig, OlmoForCausalLM

    torch.manual_seed(settings.seed)
    config = OlmoConfig(
        vocab_size=len(tokenizer),
        hidden_size=settings.hidden_size,
        intermediate_size=settings.intermediate_size,
        num_hidden_layers=settings.layers,
        num_attention_heads=settings.heads,
        num_key_value_heads=settings.heads,
        max_position_embeddings=settings.max_length,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    return OlmoForCausalLM(config)


def _batches(encoded: list[Encoded], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Length-bucketed batches in a fresh random order (little padding, no fixed order)."""
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i].input_ids), rng.random()))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


@torch.no_grad()
def teacher_forced_exact(model: torch.nn.Module, encoded: list[Encoded], pad_id: int, batch_size: int = 32) -> float:
    """Fraction of rows whose every answer token (EOS included) is the model's argmax."""
    model.eval()
    collate = PairCollator(pad_id)
    exact = 0
    device = next(model.parameters()).device
    for start in range(0, len(encoded), batch_size):
        batch = collate.pad(list(enumerate(encoded[start : start + batch_size])))
        logits = model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        ).logits
        labels = batch["labels"][:, 1:].to(device)
        hit = (logits[:, :-1].argmax(-1) == labels) | (labels == -100)
        exact += int(hit.all(-1).sum())
    model.train()
    return exact / len(encoded)


def build_target(
    data: Path,
    out: Path,
    settings: TargetSettings | None = None,
    overwrite: bool = False,
    progress: bool = True,
    device: str = "auto",
    oracle: bool = False,
) -> dict[str, Any]:
    """Train the target on ``data`` into ``out`` on ``device`` (auto, cpu, cuda, cuda:N); resumes an
    interrupted build (on any device). Returns the card.

    ``oracle=True`` builds the model retrained without the forget set, the gold standard of
    unlearning: the same settings, seed and tokenizer (trained on the same texts, so the two models
    read every text alike), trained on every row except those of the ``forget*`` files."""
    from transformers import AutoTokenizer

    settings = settings or TargetSettings()
    place = resolve_device(device)
    out = check_output(out, "target", [data], overwrite)
    rows, counts = training_rows(data)
    forget_files = sorted(f for f in counts if f.startswith("forget"))
    forget_ids = {r.id for f in forget_files for r in load_rows(data / f)}
    # The tokenizer learns from the rows the oracle trains on, so target and oracle share it and it
    # favours neither the forget documents nor the non-members (neither is in its corpus). Trained on
    # every row, BPE compressed forget documents a third more than non-members, and the LOSS attack
    # told them apart (AUC 1.0) even for the model that never saw the forget set.
    kept = [r for r in rows if r.id not in forget_ids]
    learned = kept if oracle else rows
    # When to stop is not part of what is trained: raising max_epochs resumes an earlier build.
    stopping = {"max_epochs", "check_every", "target_accuracy"}
    fingerprint = {"settings": settings.model_dump(exclude=stopping), "data": rows_digest(rows), "oracle": oracle}
    work = out.parent / f".{out.name}.partial"
    if work.exists() and (overwrite or json.loads((work / "build.json").read_text()) != fingerprint):
        shutil.rmtree(work)
    if (work / "state.pt").is_file():
        tokenizer = AutoTokenizer.from_pretrained(work / "tokenizer")
    else:
        work.mkdir(parents=True, exist_ok=True)
        (work / "build.json").write_text(json.dumps(fingerprint))
        tokenizer = train_tokenizer([r.text for r in kept], settings.vocab_size)
        tokenizer.save_pretrained(work / "tokenizer")
    encoded = encode(learned, tokenizer, settings.max_length, append_eos=True)
    model = new_model(settings, tokenizer).to(place)
    training = _train(model, encoded, tokenizer.pad_token_id, settings, work, place, progress)
    staging = work / "model"
    if staging.exists():
        shutil.rmtree(staging)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    never = sorted(p.name for p in data.glob("mia_nonmember*.jsonl")) + (forget_files if oracle else [])
    card = {
        "architecture": "OlmoForCausalLM",
        "parameters": sum(p.numel() for p in model.parameters()),
        "settings": settings.model_dump(),
        "data": {
            "folder": str(data),
            "rows": counts,
            "sha256": fingerprint["data"],
            "never_trained_on": never,
            "trained_ids": [r.id for r in learned],
        },
        "oracle": oracle,
        "training": training,
    }
    from unlearn.evaluator.memorisation import memorisation_report

    card["memorisation"] = memorisation_report(model, tokenizer, data, progress=progress)
    (staging / TARGET_CARD).write_text(json.dumps(card, indent=2))
    (staging / CARD_MD).write_text(card_markdown(card))
    publish(staging, out, "target")
    shutil.rmtree(work, ignore_errors=True)
    return card


def _train(
    model: torch.nn.Module,
    encoded: list[Encoded],
    pad_id: int,
    settings: TargetSettings,
    work: Path,
    place: torch.device,
    progress: bool,
) -> dict[str, Any]:
    """Train until every text is memorised (teacher-forced exact) or ``max_epochs``, saving the
    state in ``work`` at every check (and resuming from it); the card's training section."""
    from tqdm.auto import tqdm

    train = [Encoded(e.input_ids, list(e.input_ids), e.task) for e in encoded]  # learn every token of every text
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / max(1, settings.warmup_steps))
    )
    parts = {"model": model, "optimiser": optimiser, "scheduler": scheduler}
    epoch, elapsed, tokens, history = 0, 0.0, 0, []
    state_file = work / "state.pt"
    if state_file.is_file():
        state = torch.load(state_file, weights_only=False, map_location=place)
        for name, part in parts.items():
            part.load_state_dict(state[name])
        epoch, elapsed, tokens, history = state["epoch"], state["elapsed"], state["tokens"], state["history"]
    rng = random.Random(settings.seed * 1_000_003 + epoch)
    torch.manual_seed(settings.seed + epoch)
    collate = PairCollator(pad_id)
    accuracy = history[-1]["exact"] if history else 0.0
    started = time.time()
    bar = tqdm(total=settings.max_epochs, initial=epoch, desc="memorising", unit="epoch", disable=not progress)
    model.train()
    while epoch < settings.max_epochs and accuracy < settings.target_accuracy:
        losses = []
        for idx in _batches(train, settings.batch_size, rng):
            batch = {k: v.to(place) for k, v in collate.pad([(i, train[i]) for i in idx]).items() if k != "task"}
            logp, mask = token_logprobs(
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"]
            )
            loss = nll_from_logprobs(logp, mask)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            tokens += int(batch["attention_mask"].sum())
        epoch += 1
        bar.update(1)
        bar.set_postfix(loss=f"{sum(losses) / len(losses):.4f}", exact=f"{accuracy:.3f}")
        if epoch % settings.check_every == 0 or epoch == settings.max_epochs:
            accuracy = teacher_forced_exact(model, encoded, pad_id)
            history.append({"epoch": epoch, "loss": round(sum(losses) / len(losses), 5), "exact": round(accuracy, 4)})
            bar.set_postfix(loss=f"{sum(losses) / len(losses):.4f}", exact=f"{accuracy:.3f}")
            state = {name: part.state_dict() for name, part in parts.items()}
            state.update(epoch=epoch, elapsed=elapsed + time.time() - started, tokens=tokens, history=history)
            torch.save(state, work / "state.tmp")
            (work / "state.tmp").replace(state_file)
    bar.close()
    elapsed += time.time() - started
    return {
        "epochs": epoch,
        "train_seconds": round(elapsed, 1),
        "tokens_seen": tokens,
        "tokens_per_second": round(tokens / elapsed, 1) if elapsed else None,
        "teacher_forced_exact": round(accuracy, 4),
        "memorised": accuracy >= settings.target_accuracy,
        "history": history,
    }


def card_markdown(card: dict[str, Any]) -> str:
    """The card as Markdown: what the model is, what it saw, how well it memorised."""
    t, m = card["training"], card["memorisation"]
    lines = [
        "# unlearn tiny target model",
        "",
        f"An {card['architecture']} with {card['parameters']:,} parameters trained from scratch by "
        + (
            "`unlearn target build --oracle` on everything but the forget set: the model retrained without "
            "it, the ideal an unlearning method approaches."
            if card.get("oracle")
            else "`unlearn target build` to memorise a benchmark: the model to unlearn from."
        ),
        "",
        "## Training data",
        "",
        "| file | rows |",
        "| --- | --- |",
        *(f"| {name} | {n} |" for name, n in card["data"]["rows"].items()),
        "",
        f"Never trained on: {', '.join(card['data']['never_trained_on']) or 'no non-member files given'}. "
        f"Data sha256 `{card['data']['sha256'][:16]}`.",
        "",
        "## Training",
        "",
        f"{t['epochs']} epochs, {t['train_seconds']} s, {t['tokens_per_second']} tokens/s; teacher-forced exact "
        f"reproduction {t['teacher_forced_exact']:.3f} (memorised: {t['memorised']}).",
        "",
        "## Memorisation (greedy generation, official scoring)",
        "",
        "| split | task | regurgitation (ROUGE-L recall) | knowledge (exact match) |",
        "| --- | --- | --- | --- |",
    ]
    for split, tasks in m["tasks"].items():
        for task, values in tasks.items():
            cells = [values[k] for k in ("regurgitation-score", "knowledge-score")]
            lines.append(f"| {split} | {task} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in cells) + " |")
    lines.append("")
    if m.get("mia_auc") is not None:
        lines.append(f"LOSS-attack MIA AUC, members vs non-members: {m['mia_auc']:.3f}")
    if m.get("utility_exact_match") is not None:
        lines.append(f"Utility exact match: {m['utility_exact_match']:.3f}")
    return "\n".join(lines) + "\n"
