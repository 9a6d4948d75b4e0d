"""Lookahead-MLM: a masked-language-model encoder that routes while "imagining" the responses.

One sequence per query: `[CLS] prompt [SEP]` followed by T blocks of `block_len` slots, one
block per candidate. The last slot of every block is `[SEP]`, so a block holds at most
`block_len - 1` response tokens. Block t starts with the first tokens of response t; its last k
response tokens are replaced by candidate t's model-ID token (an unused vocabulary token,
`[unused{t}]` by default), which also fills the block up to its `[SEP]`. The encoder is trained to
recover the hidden tokens (auxiliary MLM loss) and to predict the labels from the [CLS] hidden
state (routing loss). The hidden fraction (mask rate) rises to 1 during training
(see `lookahead_ray.curriculum`); at evaluation it is 1, so no response is needed or seen.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from lookahead_ray.routers.losses import IGNORE_INDEX, LookaheadLoss, lookahead_mlm_loss, masked_token_ce
from lookahead_ray.routers.mlc import layer_kwargs, needs_tokenizer


def masked_count(n_tokens: int, mask_rate: float) -> int:
    """How many of a block's `n_tokens` response tokens to hide: max(1, floor(n * r)), 0 if n == 0.

    A tolerance of 1e-9 keeps float noise from flooring 29 to 28 (100 * 0.29 is 28.999999999999996).

    >>> masked_count(10, 0.3), masked_count(3, 0.3), masked_count(3, 1.0), masked_count(0, 0.5)
    (3, 1, 3, 0)
    """
    if not 0.0 <= mask_rate <= 1.0:
        raise ValueError(f"mask_rate must be in [0, 1], got {mask_rate}")
    if n_tokens == 0:
        return 0
    return min(n_tokens, max(1, math.floor(n_tokens * mask_rate + 1e-9)))


def build_block(
    response_ids: Sequence[int], model_id: int, sep_id: int, block_len: int, mask_rate: float
) -> tuple[list[int], list[int]]:
    """One candidate's block and its MLM targets, both `block_len` long.

    >>> build_block([21, 22, 23], model_id=5, sep_id=3, block_len=5, mask_rate=0.5)
    ([21, 22, 5, 5, 3], [-100, -100, 23, -100, -100])
    """
    shown = list(response_ids[: block_len - 1])  # the response tokens that fit before [SEP]
    n_visible = len(shown) - masked_count(len(shown), mask_rate)
    ids = shown[:n_visible] + [model_id] * (block_len - 1 - n_visible) + [sep_id]
    targets = [IGNORE_INDEX] * n_visible + shown[n_visible:]
    targets += [IGNORE_INDEX] * (block_len - len(targets))
    return ids, targets


class MaskedCollator:
    """Builds Lookahead-MLM batches; right padding with [PAD]; the caller supplies the mask rate.

    Examples are dicts with "prompt" (str), "responses" (list[str], length T; may be left out when
    mask_rate == 1, as at evaluation) and "labels" (list[float], length T; optional). Output:
    input_ids, attention_mask, mlm_targets (the original id at each hidden response token, -100
    elsewhere, padding included) and block_starts (B, T), the index of each block's first slot;
    "labels" (B, T) float when every example has labels.

    Example with T=2, block_len=4 (3 response slots + [SEP]), mask_rate=0.5, ids [PAD]=0,
    [CLS]=2, [SEP]=3, [unused0]=5, [unused1]=6, hello=15, world=16, a=19, b=20, c=21, d=22:

        prompt "hello world", responses ["a b c", "d"]:
          "a b c": 3 tokens, k = max(1, floor(1.5)) = 1 -> a b [unused0] [SEP]
          "d":     1 token,  k = max(1, floor(0.5)) = 1 -> [unused1] x3 [SEP]
          input_ids   = [2, 15, 16, 3,   19,   20,  5,    3,  6,    6,    6,    3]
          mlm_targets = [-100 x 6,                  21, -100, 22, -100, -100, -100]
          block_starts = [4, 8]
    """

    def __init__(
        self,
        tokenizer: Any,
        n_candidates: int,
        block_len: int = 64,
        max_prompt_len: int = 128,
        model_tokens: Sequence[str] | None = None,
    ) -> None:
        if n_candidates < 1:
            raise ValueError(f"n_candidates must be >= 1, got {n_candidates}")
        if block_len < 2:
            raise ValueError(f"block_len must be >= 2 (one response slot and [SEP]), got {block_len}")
        self.tokenizer = tokenizer
        self.n_candidates = n_candidates
        self.block_len = block_len
        self.max_prompt_len = max_prompt_len
        tokens = list(model_tokens) if model_tokens is not None else [f"[unused{t}]" for t in range(n_candidates)]
        if len(tokens) != n_candidates:
            raise ValueError(f"{len(tokens)} model_tokens for {n_candidates} candidates")
        self.model_token_ids = [vocabulary_id(tokenizer, token) for token in tokens]

    @property
    def max_length(self) -> int:
        """The longest sequence this collator can produce."""
        return self.max_prompt_len + 2 + self.n_candidates * self.block_len

    def __call__(self, examples: Sequence[dict[str, Any]], mask_rate: float) -> dict[str, torch.Tensor]:
        rows = [self.encode(example, mask_rate) for example in examples]
        width = max(len(ids) for ids, _, _ in rows)
        pad = self.tokenizer.pad_token_id
        batch = {
            "input_ids": torch.tensor([ids + [pad] * (width - len(ids)) for ids, _, _ in rows]),  # (B, S)
            "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _, _ in rows]),
            "mlm_targets": torch.tensor([tg + [IGNORE_INDEX] * (width - len(tg)) for _, tg, _ in rows]),  # (B, S)
            "block_starts": torch.tensor([starts for _, _, starts in rows]),  # (B, T)
        }
        if all("labels" in example for example in examples):
            batch["labels"] = self.labels(examples)  # (B, T)
        return batch

    def encode(self, example: dict[str, Any], mask_rate: float) -> tuple[list[int], list[int], list[int]]:
        """One example -> (input_ids, mlm_targets, block_starts), unpadded."""
        prompt = self.tokenizer(
            example["prompt"], add_special_tokens=False, truncation=True, max_length=self.max_prompt_len
        )["input_ids"]
        ids = [self.tokenizer.cls_token_id, *prompt, self.tokenizer.sep_token_id]
        targets = [IGNORE_INDEX] * len(ids)
        starts = []
        for t, response in enumerate(self.response_ids(example, mask_rate)):
            block, block_targets = build_block(
                response, self.model_token_ids[t], self.tokenizer.sep_token_id, self.block_len, mask_rate
            )
            starts.append(len(ids))
            ids += block
            targets += block_targets
        return ids, targets, starts

    def response_ids(self, example: dict[str, Any], mask_rate: float) -> list[list[int]]:
        """Token ids of the T responses, cut to the block; empty when none are given (mask_rate 1)."""
        responses = example.get("responses")
        if responses is None:
            if mask_rate != 1.0:
                raise ValueError(f"an example without responses needs mask_rate 1, got {mask_rate}")
            return [[] for _ in range(self.n_candidates)]
        if len(responses) != self.n_candidates:
            raise ValueError(f"{len(responses)} responses for {self.n_candidates} candidates")
        cut = self.block_len - 1  # the slots before [SEP]
        return self.tokenizer(list(responses), add_special_tokens=False, truncation=True, max_length=cut)["input_ids"]

    def labels(self, examples: Sequence[dict[str, Any]]) -> torch.Tensor:
        labels = torch.tensor([example["labels"] for example in examples], dtype=torch.float)  # (B, T)
        if labels.shape[1] != self.n_candidates:
            raise ValueError(f"{labels.shape[1]} labels per example for {self.n_candidates} candidates")
        return labels


def vocabulary_id(tokenizer: Any, token: str) -> int:
    """The id of a token that must already be in the vocabulary (not mapped to [UNK])."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise ValueError(f"model token {token!r} is not in the tokenizer's vocabulary")
    return token_id


def vocabulary_head(mlm: nn.Module) -> Any:
    """hidden (N, H) -> vocabulary logits (N, V) of a masked LM, for the architectures whose head
    is known (BERT, ModernBERT, RoBERTa); None for others, which then run their whole forward."""
    if hasattr(mlm, "cls"):  # BertForMaskedLM
        return mlm.cls
    if hasattr(mlm, "decoder") and hasattr(mlm, "head"):  # ModernBertForMaskedLM
        return lambda hidden: mlm.decoder(mlm.head(hidden))
    return getattr(mlm, "lm_head", None)  # RobertaForMaskedLM and kin


class LookaheadMLM(nn.Module):
    """A masked-LM backbone plus a routing head (dropout + Linear(hidden, T)) on [CLS].

    With a `tokenizer` (from_pretrained loads one), `score` also takes the evaluation's raw
    batches (a "prompt" list) and `collator()` gives the training collator with the same layout.
    """

    def __init__(
        self,
        mlm: nn.Module,
        n_candidates: int,
        dropout: float = 0.1,
        tokenizer: Any = None,
        block_len: int = 64,
        max_prompt_len: int = 128,
    ) -> None:
        super().__init__()
        if n_candidates < 1:
            raise ValueError(f"n_candidates must be >= 1, got {n_candidates}")
        self.mlm = mlm
        self.n_candidates = n_candidates
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(mlm.config.hidden_size, n_candidates)
        self.tokenizer = tokenizer
        self.block_len = block_len
        self.max_prompt_len = max_prompt_len

    @classmethod
    def from_pretrained(
        cls,
        backbone_path_or_id: str,
        n_candidates: int,
        num_layers: int | None = None,
        dropout: float = 0.1,
        block_len: int = 64,
        max_prompt_len: int = 128,
    ) -> "LookaheadMLM":
        """Load a masked LM and its tokenizer (local path or id), first `num_layers` layers if given.

        A sentence-embedding checkpoint such as all-MiniLM-L6-v2 has no MLM head weights; the
        head is then freshly initialised (its decoder stays tied to the word embeddings).
        """
        from transformers import AutoModelForMaskedLM, AutoTokenizer  # heavy: transformers only when a backbone loads

        mlm = AutoModelForMaskedLM.from_pretrained(backbone_path_or_id, dtype=torch.float32, **layer_kwargs(num_layers))
        tokenizer = AutoTokenizer.from_pretrained(backbone_path_or_id)
        return cls(mlm, n_candidates, dropout, tokenizer, block_len, max_prompt_len)

    def collator(self) -> MaskedCollator:
        return MaskedCollator(needs_tokenizer(self.tokenizer), self.n_candidates, self.block_len, self.max_prompt_len)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, with_mlm: bool = True,
        target_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Routing logits (B, T) and MLM logits (B, S, V); with_mlm=False skips the vocabulary head.

        With `target_mask` (B, S) bool, the MLM logits are (N, V) at its N true positions only, in
        row-major order: the vocabulary projection, the costliest part of the head, runs on the
        masked tokens alone.
        """
        self.check_length(input_ids)
        head = vocabulary_head(self.mlm)
        if with_mlm and (target_mask is None or head is None):
            out = self.mlm(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
            hidden, mlm_logits = out.hidden_states[-1], out.logits  # (B, S, H), (B, S, V)
            if target_mask is not None:
                mlm_logits = mlm_logits[target_mask]  # (N, V)
        else:
            hidden = self.mlm.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mlm_logits = head(hidden[target_mask]) if with_mlm else None  # (N, V)
        return self.head(self.dropout(hidden[:, 0])), mlm_logits  # (B, T)

    def score(self, batch: dict[str, Any]) -> torch.Tensor:
        """Routing logits (B, T), float32 on the CPU. Call `.eval()` first for deterministic scores.

        `batch` is collated with mask_rate 1 (input_ids, attention_mask) or raw, with a "prompt" list.
        """
        if "input_ids" not in batch:
            batch = self.collator()([{"prompt": prompt} for prompt in batch["prompt"]], mask_rate=1.0)
        device = self.head.weight.device
        with torch.no_grad():
            routing, _ = self(batch["input_ids"].to(device), batch["attention_mask"].to(device), with_mlm=False)
        return routing.float().cpu()

    def training_loss(self, batch: dict[str, Any], aux_weight: float = 0.2) -> LookaheadLoss:
        target_mask = batch["mlm_targets"] != IGNORE_INDEX  # (B, S)
        routing_logits, mlm_logits = self(batch["input_ids"], batch["attention_mask"], target_mask=target_mask)
        return lookahead_mlm_loss(routing_logits, batch["labels"], mlm_logits, batch["mlm_targets"][target_mask],
                                  aux_weight)

    def head_parameters(self):
        """The vocabulary head's own parameters: not the decoder weight it shares with the word
        embeddings (a tied decoder is already pretrained, and moving it would move the inputs too)."""
        shared = {id(p) for p in self.mlm.get_input_embeddings().parameters()}
        head = vocabulary_head(self.mlm)
        modules = [head] if isinstance(head, nn.Module) else [self.mlm.head, self.mlm.decoder]
        return [p for m in modules for p in m.parameters() if id(p) not in shared]

    def head_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """Masked-token cross-entropy through the vocabulary head alone: the backbone runs without
        gradients, so only `head_parameters()` learn (the head warm-up of training/loop.py)."""
        target_mask = batch["mlm_targets"] != IGNORE_INDEX  # (B, S)
        with torch.no_grad():
            hidden = self.mlm.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        head = vocabulary_head(self.mlm)
        return masked_token_ce(head(hidden[target_mask]), batch["mlm_targets"][target_mask])  # (N, V) vs (N,)

    def check_length(self, input_ids: torch.Tensor) -> None:
        limit = getattr(self.mlm.config, "max_position_embeddings", None)
        if limit is not None and input_ids.shape[1] > limit:
            raise ValueError(
                f"sequence of {input_ids.shape[1]} tokens exceeds the backbone's {limit} positions; "
                "lower max_prompt_len or block_len"
            )
