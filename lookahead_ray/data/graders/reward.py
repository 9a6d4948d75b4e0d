"""The reward-model grader: an HF sequence-classification model scores (prompt, response) pairs."""

from __future__ import annotations

from lookahead_ray.backbones import resolve


def reward_text(tokenizer, prompt: str, response: str) -> str:
    """The conversation the reward model reads: its chat template, else plain User/Assistant turns."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return f"User: {prompt}\n\nAssistant: {response}"


class RewardModel:
    """An HF sequence-classification reward model (id, path or alias): one float per (prompt, response).

    The reward is the single logit of a one-label head, else the last label's logit minus the first's.
    """

    def __init__(self, model: str, batch_size: int = 8, max_length: int = 1024):
        # heavy imports: only when a reward model is used
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = resolve(model)
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size, self.max_length = batch_size, max_length

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        texts = [reward_text(self.tokenizer, p, r) for p, r in zip(prompts, responses)]
        rewards = []
        for start in range(0, len(texts), self.batch_size):
            inputs = self.tokenizer(texts[start:start + self.batch_size], return_tensors="pt", padding=True,
                                    truncation=True, max_length=self.max_length)
            with self.torch.no_grad():
                logits = self.model(**inputs).logits  # (B, num_labels)
            reward = logits[:, 0] if logits.shape[1] == 1 else logits[:, -1] - logits[:, 0]  # (B,)
            rewards += [float(x) for x in reward]
        return rewards
