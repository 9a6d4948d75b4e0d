"""One transformers generation core, shared by the `hf` engine of `generate` (left-padded batches of
rows) and the transformers engine of the Serve app (one request, streamed or not).

It loads a model, pads, samples and ends an answer by one rule (`end_answer`): the answer is the
tokens before the first end token; the end token is dropped from the text but counted as generated,
as vLLM counts it (`usage.completion_tokens`, ray.data.llm's `num_generated_tokens`), so both engines
report the same token counts for the same answer.

Decoding follows vLLM's semantics where transformers differs:
- a temperature under GREEDY_BELOW decodes greedily (transformers would divide the logits by 1e-300
  into infinities, and softmax then gives NaN probabilities);
- OpenAI's presence and frequency penalties are subtracted from the raw logits before temperature
  and top-p, over the tokens generated so far (transformers has only a multiplicative repetition
  penalty);
- log-probabilities are those of the raw model distribution (vLLM's default `raw_logprobs`).

torch and transformers are imported where used: `generate` (and so the CLI) imports this module,
and a `lookahead-ray --help` should not pay for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from lookahead_ray.candidates import engine_dtype

GREEDY_BELOW = 1e-5  # vLLM's _SAMPLING_EPS


@dataclass(frozen=True)
class Decoding:
    """How one request (or one group of rows) decodes: vLLM SamplingParams in transformers terms."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    top_logprobs: int | None = None
    """None: no log-probabilities; k in 0..20: each answer token's log-probability and its k best
    alternatives."""

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW


@dataclass(frozen=True)
class Ending:
    """A finished answer: its tokens (no end token), why it stopped, and how many tokens it cost."""

    tokens: list[int]
    finish: str
    generated: int


def end_answer(new: Sequence[int], eos: set[int] | Sequence[int], max_tokens: int) -> Ending:
    """The one rule that ends an answer: cut before the first end token, count the end token.

    Padding after an end token (a finished row of a batch) is cut with it.

    >>> end_answer([5, 6, 2, 0, 0], {2}, 5)
    Ending(tokens=[5, 6], finish='stop', generated=3)
    >>> end_answer([5, 6, 7], {2}, 3)
    Ending(tokens=[5, 6, 7], finish='length', generated=3)
    """
    for i, token in enumerate(new):
        if token in eos:
            return Ending(list(new[:i]), "stop", i + 1)
    tokens = list(new[:max_tokens])
    # fewer tokens than allowed and no end token: a stop string or a cancelled request stopped it
    return Ending(tokens, "length" if len(tokens) >= max_tokens else "stop", len(tokens))


class StopText:
    """Cuts streamed text at the first stop sequence, holding back what could be the start of one,
    and a trailing U+FFFD (half a UTF-8 character, as `HFCore.decode` drops it at the end).

    >>> cut = StopText(("END",))
    >>> cut.feed("ab E"), cut.feed("N"), cut.feed("D and more"), cut.stopped
    ('ab', ' ', '', True)
    >>> cut = StopText(("END",)); cut.feed("abc"), cut.flush()
    ('a', 'bc')
    >>> cut = StopText(()); cut.feed("ab\ufffd"), cut.feed("\ufffdc\ufffd"), cut.flush()
    ('ab', '\ufffd\ufffdc', '')
    """

    def __init__(self, stop: Sequence[str]):
        self.stop = tuple(stop)
        self.hold = max((len(s) for s in self.stop), default=1) - 1  # the longest partial match
        self.text = ""
        self.sent = 0
        self.stopped = False

    def feed(self, piece: str) -> str:
        """The text that can be sent now."""
        if self.stopped:
            return ""
        self.text += piece
        hits = [i for i in (self.text.find(s, max(0, self.sent - self.hold)) for s in self.stop) if i >= 0]
        if hits:
            self.stopped = True
            return self.take(min(hits))
        end = len(self.text) - self.hold
        while end > self.sent and self.text[end - 1] == "\ufffd":
            end -= 1  # maybe the first half of a character the next piece completes
        return self.take(max(self.sent, end))

    def flush(self) -> str:
        return "" if self.stopped else self.take(max(self.sent, len(self.text.rstrip("\ufffd"))))

    def take(self, end: int) -> str:
        out, self.sent = self.text[self.sent:end], max(self.sent, end)
        return out


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """The text before the first stop sequence, and whether one was found (OpenAI drops the stop)."""
    cut = StopText(stop)
    out = cut.feed(text)
    return (out if cut.stopped else out + cut.flush()), cut.stopped


def penalties_processor(presence: float, frequency: float, prompt_width: int):
    """A transformers LogitsProcessor: logits -= frequency * count + presence * (count > 0), with
    counts over the generated tokens only (OpenAI's and vLLM's definition)."""
    # heavy imports: hf_core loads torch and transformers only with a model
    import torch
    from transformers import LogitsProcessor

    class Penalties(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            generated = input_ids[:, prompt_width:]  # (B, steps)
            counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
            return scores - frequency * counts - presence * (counts > 0).to(scores.dtype)  # (B, V)

    return Penalties()


class HFCore:
    """A transformers causal LM ready to generate: tokenizer, model, end tokens, pad token."""

    def __init__(self, model_path: str, dtype: str = "auto", threads: int | None = None, device: str = "auto"):
        # heavy imports: hf_core loads torch and transformers only with a model
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        dtype = engine_dtype(dtype, self.device != "cpu")  # auto: float32 on a CPU without native bf16
        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype).eval()
        self.model.to(self.device)
        self.eos = self.end_tokens()
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos)

    def end_tokens(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        if ids is None:
            ids = self.tokenizer.eos_token_id
        ids = ids if isinstance(ids, list) else [ids]
        return {int(i) for i in ids if i is not None}

    def decode(self, tokens: Sequence[int]) -> str:
        """The text, without an incomplete trailing UTF-8 character (vLLM holds those back too)."""
        return self.tokenizer.decode(list(tokens), skip_special_tokens=True).rstrip("\ufffd")

    def end(self, new: Sequence[int], max_tokens: int) -> Ending:
        return end_answer(new, self.eos, max_tokens)

    def generate(self, prompts: list[list[int]], decoding: Decoding, streamer: Any = None,
                 should_stop: Callable[[], bool] | None = None) -> tuple[list[list[int]], list[Any] | None]:
        """New token ids per prompt (each up to max_tokens; a finished row is padded after its end
        token), and with `decoding.top_logprobs` set, each row's per-step log-softmax (steps, V)."""
        torch = self.torch
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList  # heavy: as in __init__

        class Cancel(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return should_stop is not None and should_stop()

        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[self.pad] * (width - len(p)) + list(p) for p in prompts], device=self.device)  # (B, L)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)  # (B, L)
        processors = LogitsProcessorList()
        if decoding.presence_penalty or decoding.frequency_penalty:
            processors.append(penalties_processor(decoding.presence_penalty, decoding.frequency_penalty, width))
        kwargs: dict[str, Any] = {"do_sample": False}
        if not decoding.greedy:
            from transformers import TemperatureLogitsWarper, TopPLogitsWarper  # heavy: as in __init__

            # our own warpers after the penalties (transformers would put its warpers first): vLLM's order
            processors += [TemperatureLogitsWarper(decoding.temperature)]
            if decoding.top_p < 1.0:
                processors.append(TopPLogitsWarper(decoding.top_p))
            kwargs = {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0}
            torch.manual_seed(decoding.seed)
        if decoding.stop:
            kwargs.update(stop_strings=list(decoding.stop), tokenizer=self.tokenizer)
        want_logits = decoding.top_logprobs is not None
        with torch.no_grad():
            out = self.model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=decoding.max_tokens,
                                      pad_token_id=self.pad, eos_token_id=sorted(self.eos), streamer=streamer,
                                      logits_processor=processors, stopping_criteria=StoppingCriteriaList([Cancel()]),
                                      return_dict_in_generate=True, output_logits=want_logits, **kwargs)
        new = out.sequences[:, width:].tolist()  # (B, <= max_tokens)
        if not want_logits:
            return new, None
        steps = torch.stack(out.logits, dim=1).float().log_softmax(dim=-1)  # (B, steps, V)
        return new, list(steps.cpu())

    def logprobs(self, tokens: Sequence[int], steps: Any, top: int) -> list[dict[str, Any]]:
        """OpenAI's `logprobs.content` for an answer's tokens, from its per-step log-softmax (steps, V)."""
        content = []
        for step, token in enumerate(tokens):
            row = steps[step]  # (V,)
            best = self.torch.topk(row, top).indices.tolist() if top else []
            content.append({**self.token_entry(token, float(row[token])),
                            "top_logprobs": [self.token_entry(t, float(row[t])) for t in best]})
        return content

    def token_entry(self, token: int, logprob: float) -> dict[str, Any]:
        text = self.tokenizer.decode([token])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}
