"""MLC: the multi-label classification baseline router.

An encoder reads the prompt only; a linear head on the first token's ([CLS]) hidden state gives
one logit per candidate. `score` returns those logits (B, T): argmax is the same on logits and on
sigmoid probabilities, and every router in this package scores in logits.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from lookahead_ray.routers.losses import LookaheadLoss, routing_bce


class MLCCollator:
    """Tokenises prompts for `MLCRouter`; right padding.

    Examples are dicts with "prompt" (str) and, for training, "labels" (list[float], length T).
    "labels" is in the batch only when every example has it.

    >>> # collator = MLCCollator(tokenizer, max_prompt_len=8)
    >>> # collator([{"prompt": "hello world", "labels": [1.0, 0.0]}])
    >>> # {"input_ids": [[CLS, hello, world, SEP]], "attention_mask": [[1, 1, 1, 1]], "labels": [[1., 0.]]}
    """

    def __init__(self, tokenizer: Any, max_prompt_len: int = 512) -> None:
        self.tokenizer = tokenizer
        self.max_prompt_len = max_prompt_len

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer(
            [example["prompt"] for example in examples],
            truncation=True,
            max_length=self.max_prompt_len,
            padding=True,
            return_tensors="pt",
        )
        batch = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}  # (B, S)
        if all("labels" in example for example in examples):
            batch["labels"] = torch.tensor([example["labels"] for example in examples], dtype=torch.float)  # (B, T)
        return batch


class MLCRouter(nn.Module):
    """Backbone encoder + dropout + Linear(hidden, T) on the first token's hidden state.

    With a `tokenizer` (from_pretrained loads one), `score` also takes the evaluation's raw
    batches (a "prompt" list) and `collator()` gives the matching training collator.
    """

    def __init__(
        self,
        backbone: nn.Module,
        n_candidates: int,
        dropout: float = 0.1,
        tokenizer: Any = None,
        max_prompt_len: int = 512,
    ) -> None:
        super().__init__()
        if n_candidates < 1:
            raise ValueError(f"n_candidates must be >= 1, got {n_candidates}")
        self.backbone = backbone
        self.n_candidates = n_candidates
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.config.hidden_size, n_candidates)
        self.tokenizer = tokenizer
        self.max_prompt_len = max_prompt_len

    @classmethod
    def from_pretrained(
        cls,
        backbone_path_or_id: str,
        n_candidates: int,
        num_layers: int | None = None,
        dropout: float = 0.1,
        max_prompt_len: int = 512,
    ) -> "MLCRouter":
        """Load an encoder and its tokenizer (local path or id), first `num_layers` layers if given."""
        from transformers import AutoModel, AutoTokenizer  # heavy: transformers only when a backbone loads

        backbone = AutoModel.from_pretrained(backbone_path_or_id, dtype=torch.float32, **layer_kwargs(num_layers))
        tokenizer = AutoTokenizer.from_pretrained(backbone_path_or_id)
        if tokenizer.pad_token is None:  # decoder tokenizers often have none; padding is masked out anyway
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"  # forward() finds the last real token from the mask
        return cls(backbone, n_candidates, dropout, tokenizer, max_prompt_len)

    def collator(self) -> MLCCollator:
        return MLCCollator(needs_tokenizer(self.tokenizer), self.max_prompt_len)

    @property
    def pools_last_token(self) -> bool:
        """A decoder backbone (no [CLS], as SmolLM2) reads the last prompt token, whose causal state has
        seen the whole prompt, as HF's *ForSequenceClassification does; an encoder reads [CLS]."""
        return self.tokenizer is not None and getattr(self.tokenizer, "cls_token", None) is None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, S, H)
        if self.pools_last_token:
            last = attention_mask.sum(dim=1) - 1  # (B,) right padding: the last real token
            return self.head(self.dropout(hidden[torch.arange(len(last), device=hidden.device), last]))  # (B, T)
        return self.head(self.dropout(hidden[:, 0]))  # (B, T)

    def score(self, batch: dict[str, Any]) -> torch.Tensor:
        """Routing logits (B, T), float32 on the CPU. Call `.eval()` first for deterministic scores.

        `batch` is a collated batch (input_ids, attention_mask) or a raw one with a "prompt" list.
        """
        if "input_ids" not in batch:
            batch = self.collator()([{"prompt": prompt} for prompt in batch["prompt"]])
        device = self.head.weight.device
        with torch.no_grad():
            return self(batch["input_ids"].to(device), batch["attention_mask"].to(device)).float().cpu()

    def training_loss(self, batch: dict[str, Any]) -> LookaheadLoss:
        """BCE on the batch's labels; `aux` is zero (MLC has no auxiliary loss)."""
        routing = routing_bce(self(batch["input_ids"], batch["attention_mask"]), batch["labels"])
        return LookaheadLoss(routing, routing, torch.zeros((), device=routing.device))


def needs_tokenizer(tokenizer: Any) -> Any:
    if tokenizer is None:
        raise ValueError("this router has no tokenizer: build it with from_pretrained or pass tokenizer=")
    return tokenizer


def layer_kwargs(num_layers: int | None) -> dict[str, int]:
    """Config overrides that keep the first `num_layers` transformer layers (none: keep all)."""
    if num_layers is None:
        return {}
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    return {"num_hidden_layers": num_layers}
