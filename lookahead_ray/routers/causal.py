"""Lookahead-CLM: a causal LM that routes from the hidden state of a model-ID token.

Each candidate t gets a new special token `<Model_t>`. Training sequences are, per query and
candidate, `prompt <Model_t> response_t EOS`: the LM learns to continue the prompt as candidate t
would (auxiliary next-token loss on the response and EOS), and a routing head reads the hidden state
at `<Model_t>` to predict candidate t's label: the paper's Linear(hidden, 1) shared by all candidates,
or (`routing_head="per_candidate"`) one weight row and bias per candidate. In a causal
model that hidden state depends only on `prompt <Model_t>`, so at inference no response is needed,
and all T candidates are scored in one forward pass: the prompt once, then the T ID tokens, each
attending to the prompt and itself (a 4-D attention mask) at position P, as if it were alone.

Training packs a query the same way: the prompt once, then T blocks `<Model_t> response_t EOS`,
each attending to the prompt and causally to itself, at the positions it would have alone. The
logits equal those of T separate rows (a test checks it) for P + T*W tokens instead of T*(P + W).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from lookahead_ray.candidates import CandidatePool
from lookahead_ray.config import ROUTING_HEADS
from lookahead_ray.routers.losses import IGNORE_INDEX, LookaheadLoss, lookahead_clm_loss
from lookahead_ray.routers.masked import vocabulary_id
from lookahead_ray.routers.mlc import layer_kwargs

MASK_ATTENTION = ("sdpa", "eager")  # attention implementations that honour a custom 4-D mask


def model_tokens(pool_or_n_candidates: CandidatePool | int) -> list[str]:
    """The model-ID tokens `<Model_0>` ... `<Model_{T-1}>` of a pool or of T candidates.

    >>> model_tokens(2)
    ['<Model_0>', '<Model_1>']
    """
    if isinstance(pool_or_n_candidates, CandidatePool):
        return [pool_or_n_candidates.model_token(t) for t in range(len(pool_or_n_candidates))]
    if pool_or_n_candidates < 1:
        raise ValueError(f"n_candidates must be >= 1, got {pool_or_n_candidates}")
    return [f"<Model_{t}>" for t in range(pool_or_n_candidates)]


def add_model_tokens(
    lm: nn.Module, tokenizer: Any, tokens: Sequence[str], noise_scale: float = 0.1, seed: int = 0
) -> list[int]:
    """Add `tokens` as special tokens; return their ids. Idempotent.

    Tokens the tokenizer lacked, or that had no embedding row yet, get rows (input, and output
    when untied) set to the mean row plus noise_scale * (per-dimension std) * N(0, 1), so they
    start as "a typical token".
    """
    added = [token for token in tokens if token not in tokenizer.get_vocab()]
    if added:
        tokenizer.add_special_tokens({"extra_special_tokens": added}, replace_extra_special_tokens=False)
    ids = [tokenizer.convert_tokens_to_ids(token) for token in tokens]
    old_rows = lm.get_input_embeddings().num_embeddings
    if max(ids) >= old_rows:
        lm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    new_ids = [i for token, i in zip(tokens, ids) if token in added or i >= old_rows]
    generator = torch.Generator().manual_seed(seed)
    init_rows_near_mean(lm.get_input_embeddings().weight, new_ids, noise_scale, generator)
    output = lm.get_output_embeddings()
    if output is not None and output.weight is not lm.get_input_embeddings().weight:
        init_rows_near_mean(output.weight, new_ids, noise_scale, generator)
    return ids


def init_rows_near_mean(
    weight: torch.Tensor, rows: Sequence[int], noise_scale: float, generator: torch.Generator
) -> None:
    """weight[rows] = mean(old rows) + noise_scale * std(old rows) * noise, in place."""
    if not rows:
        return
    with torch.no_grad():
        keep = torch.ones(weight.shape[0], dtype=torch.bool)
        keep[list(rows)] = False
        old = weight[keep].float()  # (V_old, H)
        noise = torch.randn(len(rows), weight.shape[1], generator=generator)  # (n_new, H)
        new = old.mean(0) + noise_scale * old.std(0) * noise
        weight[list(rows)] = new.to(weight.dtype).to(weight.device)


class CausalCollator:
    """Builds Lookahead-CLM batches; right padding (pad id: pad token, else EOS).

    Training (`__call__`), packed: per query the prompt once (prompt_ids, prompt_mask (B, P)) and
    T blocks (block_ids, block_mask (B, T, W)), block t = `<Model_t> response_t EOS`, the response
    cut so that response + EOS fit in max_response_len (EOS is kept only if the whole response
    fits). block_targets (B, T, W) is already shifted: at each slot, the id the LM should predict
    there (-100 where nothing is predicted). labels (B, T) when every example has labels.

    Example (T=2), prompt ids [7, 8], responses [[40], [50, 51]], <Model_0>=90, <Model_1>=91, EOS=2,
    pad=0:
        prompt_ids    = [[7, 8]]
        block_ids     = [[[90, 40, 2, 0], [91, 50, 51, 2]]]
        block_targets = [[[40, 2, -100, -100], [50, 51, 2, -100]]]

    Scoring (`prompts`): prompt_ids and prompt_mask (B, P), right-padded; no responses needed.
    """

    def __init__(
        self,
        tokenizer: Any,
        pool_or_n_candidates: CandidatePool | int,
        max_prompt_len: int = 256,
        max_response_len: int = 64,
    ) -> None:
        if max_response_len < 1:
            raise ValueError(f"max_response_len must be >= 1, got {max_response_len}")
        self.tokenizer = tokenizer
        self.model_token_ids = [vocabulary_id(tokenizer, token) for token in model_tokens(pool_or_n_candidates)]
        self.n_candidates = len(self.model_token_ids)
        self.max_prompt_len = max_prompt_len
        self.max_response_len = max_response_len
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        blocks = [[training_block(self.model_token_ids[t], response) for t, response in enumerate(self.response_ids(e))]
                  for e in examples]
        width = max(len(ids) for query in blocks for ids, _ in query)
        batch = self.prompts(examples)
        batch["block_ids"] = torch.tensor([[pad_to(ids, width, self.pad_id) for ids, _ in q] for q in blocks])  # (B, T, W)
        batch["block_mask"] = torch.tensor([[pad_to([1] * len(ids), width, 0) for ids, _ in q] for q in blocks])
        batch["block_targets"] = torch.tensor([[pad_to(tg, width, IGNORE_INDEX) for _, tg in q] for q in blocks])
        if all("labels" in example for example in examples):
            batch["labels"] = torch.tensor([example["labels"] for example in examples], dtype=torch.float)  # (B, T)
        return batch

    def prompts(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """The scoring batch: prompt_ids, prompt_mask (B, P), right-padded."""
        prompts = [self.prompt_ids(example["prompt"]) for example in examples]
        width = max(len(ids) for ids in prompts)
        return {
            "prompt_ids": torch.tensor([pad_to(ids, width, self.pad_id) for ids in prompts]),  # (B, P)
            "prompt_mask": torch.tensor([pad_to([1] * len(ids), width, 0) for ids in prompts]),  # (B, P)
        }

    def prompt_ids(self, prompt: str) -> list[int]:
        return self.tokenizer(prompt, truncation=True, max_length=self.max_prompt_len)["input_ids"]

    def response_ids(self, example: dict[str, Any]) -> list[list[int]]:
        responses = example["responses"]
        if len(responses) != self.n_candidates:
            raise ValueError(f"{len(responses)} responses for {self.n_candidates} candidates")
        encoded = self.tokenizer(
            list(responses), add_special_tokens=False, truncation=True, max_length=self.max_response_len
        )["input_ids"]
        return [(ids + [self.tokenizer.eos_token_id])[: self.max_response_len] for ids in encoded]


def training_block(model_id: int, response: list[int]) -> tuple[list[int], list[int]]:
    """`<Model_t> response` and its shifted targets (the response, predicted one step early).

    >>> training_block(90, [40, 2])
    ([90, 40, 2], [40, 2, -100])
    """
    return [model_id] + response, response + [IGNORE_INDEX]


def pad_to(values: list[int], width: int, pad: int) -> list[int]:
    return values + [pad] * (width - len(values))


def block_inputs(
    prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, block_ids: torch.Tensor, block_mask: torch.Tensor,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One sequence per query: the prompt (B, P), then T blocks of W slots (B, T, W).

    Returns input_ids (B, P+T*W), an additive attention mask (B, 1, S, S) (0 = attend, dtype min =
    blocked) and position_ids (B, S). Prompt rows attend causally to real prompt tokens; slot k of
    block t attends to the real prompt tokens and causally to the real slots of its own block, at
    position (prompt length + k): it sees exactly what it would see in `prompt block_t` alone.
    Every row may attend to itself, so no row is fully masked.
    """
    batch, width = prompt_ids.shape
    _, n_blocks, slots = block_ids.shape
    size, device = width + n_blocks * slots, prompt_ids.device
    input_ids = torch.cat([prompt_ids, block_ids.reshape(batch, -1)], dim=1)  # (B, S)
    index = torch.arange(size, device=device)
    block_of = torch.cat([torch.full((width,), -1, device=device),
                          torch.arange(n_blocks, device=device).repeat_interleave(slots)])  # (S,): -1 = prompt
    real = torch.cat([prompt_mask.bool(), block_mask.reshape(batch, -1).bool()], dim=1)  # (B, S)
    causal = index[:, None] >= index[None, :]  # (S, S)
    same_block = (block_of[:, None] == block_of[None, :]) | (block_of[None, :] == -1)  # key: own block or prompt
    itself = torch.eye(size, dtype=torch.bool, device=device)
    allowed = (causal & same_block)[None] & real[:, None, :] | itself  # (B, S, S)
    mask = torch.zeros(batch, 1, size, size, dtype=dtype, device=device)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)  # (B, 1, S, S)
    lengths = prompt_mask.sum(1, keepdim=True)  # (B, 1)
    slot = torch.arange(slots, device=device).repeat(n_blocks)  # (T*W,)
    position_ids = torch.cat([index[:width].expand(batch, -1), lengths + slot[None]], dim=1)  # (B, S)
    return input_ids, mask, position_ids


def one_pass_inputs(
    prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, model_token_ids: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs that score all T candidates in one forward pass: `block_inputs` with one-slot blocks,
    the T ID tokens, so input_ids is (B, P+T) = prompt ⊕ <Model_0..T-1> and ID token t sits at
    position = prompt length, attending to the real prompt tokens and itself."""
    batch, n_candidates = prompt_ids.shape[0], model_token_ids.shape[0]
    ids = model_token_ids.to(prompt_ids).expand(batch, -1)[..., None]  # (B, T, 1)
    return block_inputs(prompt_ids, prompt_mask, ids, torch.ones_like(ids), dtype)


class LookaheadCLM(nn.Module):
    """A causal LM with model-ID tokens and a routing head over their hidden states.

    `routing_head`: "shared" is one Linear(hidden, 1) for every candidate, so candidate t's score
    differs from the others' only through what its ID row makes of the prompt; "per_candidate" is
    Linear(hidden, T) read on its diagonal (candidate t's row on `<Model_t>`'s state), which adds a
    query x candidate term from the first step, as MLC's output layer has.

    The constructor adds the pool's model-ID tokens to `tokenizer` and `lm` (see
    `add_model_tokens`, whose noise_scale is `id_token_noise`) unless they are there already.
    `collator()` gives the matching collator;
    `score` takes its `prompts` batches or the evaluation's raw batches (a "prompt" list).
    """

    def __init__(
        self,
        lm: nn.Module,
        tokenizer: Any,
        pool_or_n_candidates: CandidatePool | int,
        dropout: float = 0.1,
        max_prompt_len: int = 256,
        max_response_len: int = 64,
        id_token_noise: float = 0.1,
        routing_head: str = "shared",
    ) -> None:
        super().__init__()
        if routing_head not in ROUTING_HEADS:
            raise ValueError(f"routing_head must be one of {ROUTING_HEADS}, got {routing_head!r}")
        self.lm = lm
        self.tokenizer = tokenizer
        self.max_prompt_len = max_prompt_len
        self.max_response_len = max_response_len
        ids = add_model_tokens(lm, tokenizer, model_tokens(pool_or_n_candidates), noise_scale=id_token_noise)
        self.register_buffer("model_token_ids", torch.tensor(ids), persistent=False)  # (T,)
        self.dropout = nn.Dropout(dropout)
        self.routing_head = routing_head
        self.head = nn.Linear(lm.config.hidden_size, 1 if routing_head == "shared" else len(ids))

    @property
    def n_candidates(self) -> int:
        return self.model_token_ids.shape[0]

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str,
        pool_or_n_candidates: CandidatePool | int,
        num_layers: int | None = None,
        dropout: float = 0.1,
        dtype: torch.dtype = torch.float32,
        max_prompt_len: int = 256,
        max_response_len: int = 64,
        id_token_noise: float = 0.1,
        routing_head: str = "shared",
    ) -> "LookaheadCLM":
        """Load a causal LM and its tokenizer (local path or id), first `num_layers` layers if given.

        Attention is set to "sdpa", which honours the 4-D mask of one-pass scoring.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: transformers only when a backbone loads

        tokenizer = AutoTokenizer.from_pretrained(path_or_id)
        lm = AutoModelForCausalLM.from_pretrained(
            path_or_id, dtype=dtype, attn_implementation="sdpa", **layer_kwargs(num_layers)
        )
        return cls(lm, tokenizer, pool_or_n_candidates, dropout, max_prompt_len, max_response_len, id_token_noise,
                   routing_head)

    def collator(self) -> CausalCollator:
        return CausalCollator(self.tokenizer, self.n_candidates, self.max_prompt_len, self.max_response_len)

    def forward(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        block_ids: torch.Tensor,
        block_mask: torch.Tensor,
        target_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Routing logits (B, T) from packed training batches, block t starting with <Model_t>.

        With `target_mask` (B, T, W) bool, also the LM logits (N, V) at its N true slots, in
        row-major order (`block_targets[target_mask]` are their targets); the vocabulary projection
        runs on those slots only.
        """
        batch, n_blocks, slots = block_ids.shape
        if n_blocks != self.n_candidates or not torch.equal(block_ids[:, :, 0], self.model_token_ids.expand(batch, -1)):
            raise ValueError("blocks must start with <Model_t> tokens in candidate order")
        dtype = self.lm.get_input_embeddings().weight.dtype
        input_ids, mask, position_ids = block_inputs(prompt_ids, prompt_mask, block_ids, block_mask, dtype)
        hidden = self.lm.base_model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids).last_hidden_state
        blocks = hidden[:, prompt_ids.shape[1] :].reshape(batch, n_blocks, slots, -1)  # (B, T, W, H)
        routing = self.route(blocks[:, :, 0])  # (B, T)
        if target_mask is None:
            return routing, None
        return routing, self.lm.get_output_embeddings()(blocks[target_mask])  # (B, T), (N, V)

    def route(self, id_hidden: torch.Tensor) -> torch.Tensor:
        """Routing logits (B, T) from the hidden states at the T ID tokens (B, T, H)."""
        hidden = self.dropout(id_hidden)
        if self.routing_head == "shared":
            return self.head(hidden).squeeze(-1)
        # Candidate t's row on candidate t's state: the diagonal of Linear(hidden, T), without the T x T product.
        weight = self.head.weight.to(hidden.dtype)  # (T, H)
        return (hidden * weight).sum(-1) + self.head.bias.to(hidden.dtype)  # (B, T)

    def score(self, batch: dict[str, Any]) -> torch.Tensor:
        """Routing logits (B, T), float32 on the CPU, all candidates in one forward pass.

        `batch` is a `CausalCollator.prompts` batch or raw, with a "prompt" list. Call `.eval()`
        first for deterministic scores.
        """
        if "prompt_ids" not in batch:
            batch = self.collator().prompts([{"prompt": prompt} for prompt in batch["prompt"]])
        attention = self.lm.config._attn_implementation
        if attention not in MASK_ATTENTION:
            raise ValueError(f"one-pass scoring needs attn_implementation in {MASK_ATTENTION}, got {attention!r}")
        prompt_ids = batch["prompt_ids"].to(self.model_token_ids.device)  # (B, P)
        prompt_mask = batch["prompt_mask"].to(self.model_token_ids.device)  # (B, P)
        dtype = self.lm.get_input_embeddings().weight.dtype
        input_ids, mask, position_ids = one_pass_inputs(prompt_ids, prompt_mask, self.model_token_ids, dtype)
        with torch.no_grad():
            hidden = self.lm.base_model(
                input_ids=input_ids, attention_mask=mask, position_ids=position_ids
            ).last_hidden_state  # (B, P+T, H)
            id_hidden = hidden[:, prompt_ids.shape[1] :]  # (B, T, H)
            return self.route(id_hidden).float().cpu()  # (B, T)

    def training_loss(self, batch: dict[str, Any], aux_weight: float = 0.5) -> LookaheadLoss:
        target_mask = batch["block_targets"] != IGNORE_INDEX  # (B, T, W)
        routing, lm_logits = self(batch["prompt_ids"], batch["prompt_mask"], batch["block_ids"], batch["block_mask"],
                                  target_mask)
        targets = batch["block_targets"][target_mask]  # (N,)
        return lookahead_clm_loss(routing, batch["labels"], lm_logits, targets, aux_weight)
