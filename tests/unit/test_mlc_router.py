import math

import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

from lookahead_ray.routers.base import route
from lookahead_ray.routers.losses import routing_bce
from lookahead_ray.routers.mlc import MLCCollator, MLCRouter

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(f"[unused{i}]" for i in range(10)),
         "hello", "world", "yes", "no"]  # hello=15 world=16 yes=17 no=18


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("bert") / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n")
    return BertTokenizerFast.from_pretrained(str(path.parent))


def tiny_bert():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    return BertModel(config, add_pooling_layer=False)


EXAMPLES = [{"prompt": "hello world", "labels": [1.0, 0.0, 1.0]}, {"prompt": "yes", "labels": [0.0, 0.0, 1.0]}]


def test_routing_bce_hand_worked():
    # logit 0 vs label 1: -log(1/2); logit ln 3 (p = 3/4) vs label 0: -log(1/4). Mean of the two.
    loss = routing_bce(torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([[1.0, 0.0]]))
    assert loss.item() == pytest.approx((math.log(2.0) + math.log(4.0)) / 2, abs=1e-6)


def test_routing_bce_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        routing_bce(torch.zeros(2, 3), torch.zeros(3, 2))


def test_collator_output(tokenizer):
    batch = MLCCollator(tokenizer)(EXAMPLES)
    assert batch["input_ids"].tolist() == [[2, 15, 16, 3], [2, 17, 3, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert batch["labels"].tolist() == [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]


def test_collator_leaves_out_labels_when_any_example_lacks_them(tokenizer):
    assert "labels" not in MLCCollator(tokenizer)([{"prompt": "yes"}, EXAMPLES[0]])


def test_forward_and_score_shapes_and_agreement(tokenizer):
    router = MLCRouter(tiny_bert(), n_candidates=3).eval()
    batch = MLCCollator(tokenizer)(EXAMPLES)
    logits = router(batch["input_ids"], batch["attention_mask"])
    assert logits.shape == (2, 3)
    scores = router.score(batch)
    assert torch.equal(scores, logits.detach())
    assert not scores.requires_grad
    assert route(scores).shape == (2,)


def test_score_ignores_padding(tokenizer):
    router = MLCRouter(tiny_bert(), n_candidates=3).eval()
    collate = MLCCollator(tokenizer)
    alone = router.score(collate([EXAMPLES[1]]))
    padded = router.score(collate(EXAMPLES))[1:]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=0)


def test_training_loss_reaches_backbone(tokenizer):
    router = MLCRouter(tiny_bert(), n_candidates=3)
    loss = router.training_loss(MLCCollator(tokenizer)(EXAMPLES))
    loss.total.backward()
    assert loss.total.item() == pytest.approx(loss.routing.item()) and loss.aux.item() == 0.0
    assert router.head.weight.grad.abs().sum() > 0
    assert router.backbone.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_score_takes_the_evaluations_raw_batches(tokenizer):
    router = MLCRouter(tiny_bert(), n_candidates=3, tokenizer=tokenizer).eval()
    raw = {"prompt_id": ["p1", "p2"], "benchmark": ["x", "x"], "prompt": ["hello world", "yes"]}
    assert torch.equal(router.score(raw), router.score(MLCCollator(tokenizer)(EXAMPLES)))
    with pytest.raises(ValueError, match="tokenizer"):
        MLCRouter(tiny_bert(), n_candidates=3).score(raw)


def test_from_pretrained_truncates_layers_and_loads_the_tokenizer(tmp_path, tokenizer):
    tiny_bert().save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    router = MLCRouter.from_pretrained(str(tmp_path), n_candidates=4, num_layers=1)
    assert len(router.backbone.encoder.layer) == 1
    assert router.head.out_features == 4
    assert router.collator()([{"prompt": "yes"}])["input_ids"].tolist() == [[2, 17, 3]]
    with pytest.raises(ValueError, match="num_layers"):
        MLCRouter.from_pretrained(str(tmp_path), n_candidates=4, num_layers=0)


def test_decoder_backbone_reads_the_last_prompt_token_and_ignores_padding(tmp_path):
    """SmolLM2-style MLC (the paper's `sc` router): no [CLS], so the last real token's state is read;
    a prompt scores the same alone and beside a longer one (right padding masked out)."""
    from tests.tiny_models import save_tiny_llama

    router = MLCRouter.from_pretrained(str(save_tiny_llama(tmp_path / "llama")), n_candidates=3).eval()
    assert router.pools_last_token
    alone = router.score({"prompt": ["What is 12 plus 30?"]})
    padded = router.score({"prompt": ["What is 12 plus 30?", "Write a python function that returns the sum of a list."]})
    torch.testing.assert_close(alone[0], padded[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(padded[0], padded[1])


def test_left_truncation_keeps_the_end_of_a_long_prompt(tmp_path):
    from lookahead_ray.routers.checkpoint import RouterSpec, build_router
    from tests.tiny_models import save_tiny_bert

    backbone = str(save_tiny_bert(tmp_path / "bert"))
    spec = RouterSpec(kind="mlc", backbone=backbone, candidates=("a", "b"), max_prompt_len=6, truncation_side="left")
    router = build_router(spec)
    ids = router.collator()([{"prompt": "hello world " * 10 + "solve for x"}])["input_ids"][0].tolist()
    tail = router.tokenizer("solve for x", add_special_tokens=False)["input_ids"]
    assert ids[-1] == router.tokenizer.sep_token_id and ids[-1 - len(tail):-1] == tail
