"""A SemEval-2025 Task 4 style submission, as teams wrote them: the organisers' harness calls
``unlearn(input_model_path, output_dir, forget_dir, retain_dir)``. Gradient difference with
the Hugging Face Trainer, nothing from unlearn; run unchanged by ``unlearn compete``."""

import glob
import os

import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments


class GradientDifference(Trainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        forget = model(
            input_ids=inputs["forget_ids"], attention_mask=inputs["forget_mask"], labels=inputs["forget_labels"]
        ).loss
        retain = model(
            input_ids=inputs["retain_ids"], attention_mask=inputs["retain_mask"], labels=inputs["retain_labels"]
        ).loss
        return -forget + retain


def unlearn(input_model_path, output_dir, forget_dir, retain_dir):
    tokenizer = AutoTokenizer.from_pretrained(input_model_path)
    model = AutoModelForCausalLM.from_pretrained(input_model_path)
    forget = pd.read_parquet(glob.glob(os.path.join(forget_dir, "*.parquet"))[0])
    retain = pd.read_parquet(glob.glob(os.path.join(retain_dir, "*.parquet"))[0])

    def texts(frame):
        return [i + o + tokenizer.eos_token for i, o in zip(frame["input"], frame["output"])]

    pairs = [{"forget": f, "retain": r} for f, r in zip(texts(forget), texts(retain))]

    def collate(batch):
        out = {}
        for split in ("forget", "retain"):
            enc = tokenizer(
                [b[split] for b in batch], padding=True, truncation=True, max_length=512, return_tensors="pt"
            )
            labels = enc["input_ids"].clone()
            labels[enc["attention_mask"] == 0] = -100
            out.update(
                {f"{split}_ids": enc["input_ids"], f"{split}_mask": enc["attention_mask"], f"{split}_labels": labels}
            )
        return out

    args = TrainingArguments(
        output_dir=os.path.join(output_dir, "checkpoints"),
        num_train_epochs=8,
        learning_rate=3e-4,
        per_device_train_batch_size=4,
        lr_scheduler_type="constant",
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
        seed=0,
    )
    GradientDifference(model=model, args=args, train_dataset=pairs, data_collator=collate).train()
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
