"""Hugging Face Trainer + highmark: a tiny BERT (built from a config, no download) on a toy task.

    python examples/transformers_tiny.py --out runs/tiny-bert
    highmark ls runs/tiny-bert

The task: is the second token of a random sequence in the upper half of the vocabulary? The
Trainer evaluates every few steps; highmark stops by policy, keeps the best checkpoints and ends
on the best model. Run it again with a larger ``--max-steps`` to resume the run.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from typing import Any

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    EvalPrediction,
    Trainer,
    TrainingArguments,
)

from highmark.integrations.transformers import HighmarkCallback

VOCAB = 99


class ToyTokens(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Random token ids; the label says whether token 1 is in the upper half of the vocabulary."""

    def __init__(self, n: int, seed: int, length: int = 16) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, VOCAB, (n, length), generator=gen)
        self.labels = (self.ids[:, 1] >= VOCAB // 2).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def make_model(seed: int = 0) -> BertForSequenceClassification:
    """A 2-layer BERT with hidden size 32, from a config (nothing downloaded)."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=32,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


def make_trainer(
    model: BertForSequenceClassification,
    callbacks: list[Any],
    max_steps: int,
    output_dir: str,
    eval_steps: int = 4,
    lr: float = 3e-3,
    compute_metrics: Callable[[EvalPrediction], dict[str, float]] | None = None,
    **overrides: Any,
) -> Trainer:
    """A CPU Trainer that evaluates every ``eval_steps`` and leaves saving to highmark
    (``overrides`` replace any of its ``TrainingArguments``)."""
    settings: dict[str, Any] = dict(
        output_dir=output_dir,
        max_steps=max_steps,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=128,
        learning_rate=lr,
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    settings.update(overrides)
    return Trainer(
        model=model,
        args=TrainingArguments(**settings),
        train_dataset=ToyTokens(256, seed=1),
        eval_dataset=ToyTokens(128, seed=2),
        callbacks=callbacks,
        compute_metrics=compute_metrics,
    )


def main(argv: list[str] | None = None) -> HighmarkCallback:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/tiny-bert")
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--patience", type=int, default=3)
    args = parser.parse_args(argv)

    callback = HighmarkCallback(args.out, monitor="loss", patience=args.patience, keep_best=2)
    with tempfile.TemporaryDirectory() as scratch:  # the Trainer wants an output_dir
        make_trainer(make_model(), [callback], args.max_steps, scratch).train()
    es = callback.stopper
    print(f"stopped at step {es.stopped_step} ({es.reason}); best step {callback.best_step}")
    print(f"inspect: highmark ls {args.out}")
    return callback


if __name__ == "__main__":
    main()
