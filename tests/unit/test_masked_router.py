import math

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

from lookahead_ray.routers.losses import lookahead_mlm_loss, masked_token_ce
from lookahead_ray.routers.masked import LookaheadMLM, MaskedCollator, build_block, masked_count

# [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4 [unused0..9]=5..14 hello=15 world=16 yes=17 no=18 a=19 b=20 c=21 d=22 e=23
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(f"[unused{i}]" for i in range(10)),
         "hello", "world", "yes", "no", "a", "b", "c", "d", "e"]
X = -100

EXAMPLES = [
    {"prompt": "hello world", "responses": ["a b c", "d"], "labels": [1.0, 0.0]},
    {"prompt": "yes", "responses": ["a b c d e", "b c"], "labels": [0.0, 1.0]},
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return BertTokenizerFast.from_pretrained(str(folder))


def tiny_mlm(max_positions=64):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=max_positions)
    return BertForMaskedLM(config)


# --- losses --------------------------------------------------------------------------------------


def test_masked_token_ce_hand_worked():
    logits = torch.tensor([[[math.log(3.0), 0.0], [50.0, -50.0], [0.0, 0.0]]])  # (1, 3, 2)
    targets = torch.tensor([[0, X, 1]])  # the middle (confidently wrong) position is ignored
    expected = (-math.log(3 / 4) + math.log(2.0)) / 2
    assert masked_token_ce(logits, targets).item() == pytest.approx(expected, abs=1e-6)


def test_masked_token_ce_without_targets_is_a_differentiable_zero():
    logits = torch.randn(2, 3, 5, requires_grad=True)
    loss = masked_token_ce(logits, torch.full((2, 3), X))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros(2, 3, 5))


def test_lookahead_mlm_loss_weights_the_aux_term_by_0_2():
    routing, labels = torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])  # BCE = log 2
    mlm_logits, targets = torch.zeros(1, 2, 4), torch.tensor([[X, 2]])  # CE = log 4
    loss = lookahead_mlm_loss(routing, labels, mlm_logits, targets)
    assert loss.routing.item() == pytest.approx(math.log(2.0), abs=1e-6)
    assert loss.aux.item() == pytest.approx(math.log(4.0), abs=1e-6)
    assert loss.total.item() == pytest.approx(math.log(2.0) + 0.2 * math.log(4.0), abs=1e-6)


# --- blocks and the collator -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "rate", "k"),
    [(10, 0.3, 3), (3, 0.3, 1), (1, 0.3, 1), (4, 0.0, 1), (3, 0.5, 1), (4, 0.5, 2), (5, 1.0, 5), (0, 0.5, 0),
     (100, 0.29, 29)],  # 100 * 0.29 == 28.999999999999996 in floating point
)
def test_masked_count_rounds_down_with_a_floor_of_one(n, rate, k):
    assert masked_count(n, rate) == k


def test_masked_count_rejects_rate_outside_unit_interval():
    with pytest.raises(ValueError, match="mask_rate"):
        masked_count(3, 1.5)


def test_build_block_pads_with_the_model_token_and_ends_with_sep():
    ids, targets = build_block([19, 20, 21, 22, 23, 19], model_id=7, sep_id=3, block_len=5, mask_rate=0.5)
    # only 4 tokens fit; k = 2 of them hidden
    assert ids == [19, 20, 7, 7, 3]
    assert targets == [X, X, 21, 22, X]


def test_collator_exact_output(tokenizer):
    batch = MaskedCollator(tokenizer, n_candidates=2, block_len=4)(EXAMPLES, mask_rate=0.5)
    assert batch["input_ids"].tolist() == [
        # [CLS] hello world [SEP] | a b [unused0] [SEP] | [unused1] x3 [SEP]
        [2, 15, 16, 3, 19, 20, 5, 3, 6, 6, 6, 3],
        # [CLS] yes [SEP] | a b [unused0] [SEP] (c d e cut) | b [unused1] [unused1] [SEP] | [PAD]
        [2, 17, 3, 19, 20, 5, 3, 20, 6, 6, 3, 0],
    ]
    assert batch["attention_mask"].tolist() == [[1] * 12, [1] * 11 + [0]]
    assert batch["mlm_targets"].tolist() == [
        [X, X, X, X, X, X, 21, X, 22, X, X, X],
        [X, X, X, X, X, 21, X, X, 21, X, X, X],
    ]
    assert batch["block_starts"].tolist() == [[4, 8], [3, 7]]
    assert batch["labels"].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert batch["labels"].dtype == torch.float32


def test_mask_rate_one_hides_every_response_token(tokenizer):
    collate = MaskedCollator(tokenizer, n_candidates=2, block_len=6)
    batch = collate(EXAMPLES, mask_rate=1.0)
    response_ids = set(range(19, 24))
    for row, starts in zip(batch["input_ids"].tolist(), batch["block_starts"].tolist()):
        for t, start in enumerate(starts):
            assert row[start : start + 6] == [5 + t] * 5 + [3]
        assert not response_ids & set(row)
    # every response token (3 + 1 + 5 + 2 = 11, all fit in 5 slots) is a target, nothing else is
    assert (batch["mlm_targets"] != X).sum().item() == 11


def test_examples_without_responses_need_mask_rate_one(tokenizer):
    collate = MaskedCollator(tokenizer, n_candidates=2, block_len=4)
    prompts_only = [{"prompt": example["prompt"]} for example in EXAMPLES]
    inference = collate(prompts_only, mask_rate=1.0)
    assert torch.equal(inference["input_ids"], collate(EXAMPLES, mask_rate=1.0)["input_ids"])
    assert (inference["mlm_targets"] == X).all() and "labels" not in inference
    with pytest.raises(ValueError, match="mask_rate 1"):
        collate(prompts_only, mask_rate=0.5)


def test_collator_checks_counts_and_tokens(tokenizer):
    with pytest.raises(ValueError, match="responses"):
        MaskedCollator(tokenizer, n_candidates=3, block_len=4)(EXAMPLES, mask_rate=0.5)
    with pytest.raises(ValueError, match="vocabulary"):
        MaskedCollator(tokenizer, n_candidates=1, model_tokens=["[unused99]"])


def test_prompt_is_cut_to_max_prompt_len(tokenizer):
    batch = MaskedCollator(tokenizer, n_candidates=2, block_len=4, max_prompt_len=1)(EXAMPLES[:1], mask_rate=1.0)
    assert batch["input_ids"][0, :3].tolist() == [2, 15, 3]


# --- the model --------------------------------------------------------------------------------------


def test_forward_shapes_and_loss_backward(tokenizer):
    model = LookaheadMLM(tiny_mlm(), n_candidates=2)
    batch = MaskedCollator(tokenizer, n_candidates=2, block_len=4)(EXAMPLES, mask_rate=0.5)
    routing, mlm_logits = model(batch["input_ids"], batch["attention_mask"])
    assert routing.shape == (2, 2) and mlm_logits.shape == (2, 12, len(VOCAB))
    loss = model.training_loss(batch)
    loss.total.backward()
    assert loss.total.item() == pytest.approx(loss.routing.item() + 0.2 * loss.aux.item(), rel=1e-6)
    assert model.head.weight.grad.abs().sum() > 0
    assert model.mlm.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def tiny_modernbert():
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    torch.manual_seed(0)
    config = ModernBertConfig(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                              num_attention_heads=2, max_position_embeddings=64, pad_token_id=0, cls_token_id=2,
                              sep_token_id=3, bos_token_id=2, eos_token_id=3)
    return ModernBertForMaskedLM(config)


@pytest.mark.parametrize("backbone", [tiny_mlm, tiny_modernbert])
def test_vocabulary_projection_on_masked_tokens_only_matches_the_full_head(tokenizer, backbone):
    model = LookaheadMLM(backbone(), n_candidates=2).eval()
    batch = MaskedCollator(tokenizer, n_candidates=2, block_len=4)(EXAMPLES, mask_rate=0.5)
    target_mask = batch["mlm_targets"] != X
    with torch.no_grad():
        routing, full = model(batch["input_ids"], batch["attention_mask"])
        routing_masked, masked = model(batch["input_ids"], batch["attention_mask"], target_mask=target_mask)
        loss = model.training_loss(batch)
    assert masked.shape == (int(target_mask.sum()), len(VOCAB)) and int(target_mask.sum()) > 0
    torch.testing.assert_close(masked, full[target_mask], atol=1e-5, rtol=0)
    torch.testing.assert_close(routing_masked, routing, atol=1e-6, rtol=0)
    reference = lookahead_mlm_loss(routing, batch["labels"], full, batch["mlm_targets"])
    assert loss.total.item() == pytest.approx(reference.total.item(), abs=1e-5)


def test_score_is_the_routing_logits_without_the_vocabulary_head(tokenizer):
    model = LookaheadMLM(tiny_mlm(), n_candidates=2).eval()
    collate = MaskedCollator(tokenizer, n_candidates=2, block_len=4)
    batch = collate([{"prompt": example["prompt"]} for example in EXAMPLES], mask_rate=1.0)
    scores = model.score(batch)
    assert scores.shape == (2, 2) and not scores.requires_grad
    with torch.no_grad():
        routing, _ = model(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(scores, routing, atol=1e-6, rtol=0)
    alone = model.score(collate([{"prompt": "yes"}], mask_rate=1.0))
    torch.testing.assert_close(scores[1:], alone, atol=1e-5, rtol=0)  # padding does not change a score


def test_too_long_sequences_are_refused(tokenizer):
    model = LookaheadMLM(tiny_mlm(max_positions=8), n_candidates=2)
    batch = MaskedCollator(tokenizer, n_candidates=2, block_len=4)(EXAMPLES, mask_rate=1.0)
    with pytest.raises(ValueError, match="positions"):
        model.score(batch)


def test_score_takes_the_evaluations_raw_batches(tokenizer):
    model = LookaheadMLM(tiny_mlm(), n_candidates=2, tokenizer=tokenizer, block_len=4).eval()
    raw = {"prompt_id": ["p1", "p2"], "benchmark": ["x", "x"], "prompt": ["hello world", "yes"]}
    collated = MaskedCollator(tokenizer, n_candidates=2, block_len=4)(EXAMPLES, mask_rate=1.0)
    assert torch.equal(model.score(raw), model.score(collated))
    with pytest.raises(ValueError, match="tokenizer"):
        LookaheadMLM(tiny_mlm(), n_candidates=2).score(raw)


def test_from_pretrained_truncates_layers_and_keeps_the_layout(tmp_path, tokenizer):
    tiny_mlm().save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model = LookaheadMLM.from_pretrained(str(tmp_path), n_candidates=2, num_layers=1, block_len=3, max_prompt_len=1)
    assert len(model.mlm.bert.encoder.layer) == 1
    assert model.head.out_features == 2
    batch = model.collator()([{"prompt": "hello world"}], mask_rate=1.0)
    assert batch["input_ids"].tolist() == [[2, 15, 3, 5, 5, 3, 6, 6, 3]]


def test_head_warmup_trains_the_vocabulary_head_alone(tokenizer):
    """The head warm-up (TrainConfig.head_warmup_steps) moves the MLM head's transform and bias, not
    the backbone, not the routing head, and not the decoder weight tied to the word embeddings."""
    model = LookaheadMLM(tiny_mlm(), n_candidates=2)
    params = model.head_parameters()
    tied = model.mlm.bert.embeddings.word_embeddings.weight
    assert params and all(p is not tied for p in params)
    batch = MaskedCollator(tokenizer, n_candidates=2, block_len=4)(EXAMPLES, mask_rate=0.5)
    before = model.head_loss(batch)
    before.backward()
    assert all(p.grad is not None for p in params)
    assert model.head.weight.grad is None  # no routing loss
    assert all(p.grad is None for p in model.mlm.bert.encoder.parameters())  # the backbone runs without grads
    tied_before = tied.detach().clone()
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    for _ in range(20):
        optimizer.zero_grad()
        model.head_loss(batch).backward()
        optimizer.step()
    assert model.head_loss(batch).item() < before.item()  # the head fits the masked tokens
    assert torch.equal(tied, tied_before)  # the tied decoder (= word embeddings) is not in the warm-up's optimizer
