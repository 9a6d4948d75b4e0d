"""Tiny backbones built in code and saved like a hub model, so training tests need no download."""

from __future__ import annotations

from pathlib import Path

import torch

CORPUS = [
    "What is 12 plus 30? The answer is 42.",
    "Write a python function that returns the sum of a list.",
    "def add(a, b): return a + b",
    "Compose a short poem about the sea and the sky.",
    "Solve for x: 3x + 5 = 20, so x = 5.",
] * 20


def save_tiny_bert(path: Path) -> Path:
    """A 2-layer BERT with a WordPiece vocabulary that has [unused0..9] (like all-MiniLM-L6-v2)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"[unused{i}]" for i in range(10)]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=200, special_tokens=special))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tokenizer.token_to_id("[CLS]")), ("[SEP]", tokenizer.token_to_id("[SEP]"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    BertForMaskedLM(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path


def save_tiny_llama(path: Path) -> Path:
    """A 2-layer Llama with a byte-level BPE trained in-process."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, pad_token_id=0, eos_token_id=1, bos_token_id=None)
    LlamaForCausalLM(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path


def gsm8k_routing_data(root: Path, release_frame, n_train: int, n_val: int) -> tuple[Path, Path]:
    """(dataset folder, backbone folder): the first n_train train and n_val val GSM8K queries of the
    release written as a routing dataset, and a 2-layer BERT to route with."""
    import pandas as pd

    from lookahead_ray.data.schema import write_dataset

    rows = release_frame[release_frame["benchmark"] == "GSM8K"]
    frame = pd.concat([rows[rows["split"] == "train"].head(n_train), rows[rows["split"] == "val"].head(n_val)])
    write_dataset(frame, root / "data", {"candidates": list(release_frame["candidates"].iloc[0])})
    return root / "data", save_tiny_bert(root / "bert")
