import math

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from lookahead_ray.candidates import CandidatePool
from lookahead_ray.routers.causal import (
    CausalCollator,
    LookaheadCLM,
    add_model_tokens,
    model_tokens,
    one_pass_inputs,
)
from lookahead_ray.routers.losses import lookahead_clm_loss

# <pad>=0 <eos>=1 <unk>=2 hello=3 world=4 yes=5 no=6 a=7 b=8 c=9 d=10; then <Model_0>=11 <Model_1>=12 ...
WORDS = ["<pad>", "<eos>", "<unk>", "hello", "world", "yes", "no", "a", "b", "c", "d"]
X = -100
MIN = torch.finfo(torch.float32).min

EXAMPLES = [
    {"prompt": "hello world", "responses": ["a", "b c"], "labels": [1.0, 0.0]},
    {"prompt": "yes", "responses": ["c d", "no"], "labels": [0.0, 1.0]},
]


def word_tokenizer():
    """A word-level tokenizer built in-process, so every id in these tests is a literal."""
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def tiny_llama(attention="sdpa", tied=False):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=tied, pad_token_id=0, eos_token_id=1, bos_token_id=None)
    config._attn_implementation = attention
    return LlamaForCausalLM(config)


def tiny_router(n_candidates=2, attention="sdpa", routing_head="shared", id_token_noise=0.1):
    return LookaheadCLM(tiny_llama(attention), word_tokenizer(), n_candidates, id_token_noise=id_token_noise,
                        routing_head=routing_head)


def head_logit(router, candidate, hidden):
    """The reference routing logit of one candidate from its ID token's hidden state (H,): the shared
    row, or candidate t's own row and bias."""
    row = candidate if router.routing_head == "per_candidate" else 0
    return (router.head.weight[row] @ hidden + router.head.bias[row]).item()


# --- tokens ------------------------------------------------------------------------------------------


def test_model_tokens_follow_the_pool():
    pool = CandidatePool(("x", "y", "z"))
    assert model_tokens(pool) == [pool.model_token(t) for t in range(3)] == ["<Model_0>", "<Model_1>", "<Model_2>"]
    assert model_tokens(2) == ["<Model_0>", "<Model_1>"]
    with pytest.raises(ValueError, match="n_candidates"):
        model_tokens(0)


@pytest.mark.parametrize("tied", [False, True])
def test_add_model_tokens_initialises_new_rows_near_the_mean(tied):
    lm, tokenizer = tiny_llama(tied=tied), word_tokenizer()
    old_input = lm.get_input_embeddings().weight.detach().clone()  # (11, 32)
    old_output = lm.get_output_embeddings().weight.detach().clone()
    ids = add_model_tokens(lm, tokenizer, ["<Model_0>", "<Model_1>"])
    assert ids == [11, 12]
    assert tokenizer("hello <Model_1>")["input_ids"] == [3, 12]  # never split, like any special token
    for new, old in [(lm.get_input_embeddings().weight, old_input), (lm.get_output_embeddings().weight, old_output)]:
        assert new.shape == (13, 32)
        assert torch.equal(new[:11], old)  # old rows untouched
        distance = (new[11:] - old.mean(0)).abs().max()
        assert 0 < distance < 0.1 * 5 * old.std(0).max()  # within 5 sigma of the scaled noise
        assert not torch.equal(new[11], new[12])
    # a second call adds nothing and changes nothing
    before = lm.get_input_embeddings().weight.detach().clone()
    assert add_model_tokens(lm, tokenizer, ["<Model_0>", "<Model_1>"]) == [11, 12]
    assert torch.equal(lm.get_input_embeddings().weight, before)


def test_id_token_noise_sets_how_far_apart_the_model_rows_start():
    def spread(noise):
        rows = LookaheadCLM(tiny_llama(), word_tokenizer(), 3, id_token_noise=noise).lm.get_input_embeddings().weight[11:]
        return torch.cdist(rows, rows).sum().item()

    assert spread(1.0) == pytest.approx(10 * spread(0.1), rel=1e-4)  # the same seeded noise, ten times the scale
    assert spread(0.0) == 0.0  # every row the mean row


def test_add_model_tokens_fills_rows_for_tokens_the_tokenizer_already_had():
    tokenizer = word_tokenizer()
    add_model_tokens(tiny_llama(), tokenizer, ["<Model_0>"])  # e.g. a tokenizer saved after fine-tuning
    lm = tiny_llama()
    old = lm.get_input_embeddings().weight.detach().clone()
    assert add_model_tokens(lm, tokenizer, ["<Model_0>"]) == [11]
    distance = (lm.get_input_embeddings().weight[11] - old.mean(0)).abs().max()
    assert distance < 0.1 * 5 * old.std(0).max()


# --- collation -----------------------------------------------------------------------------------------


def test_collator_training_batch_exact():
    router = tiny_router()
    batch = CausalCollator(router.tokenizer, 2)(EXAMPLES)
    assert batch["prompt_ids"].tolist() == [[3, 4], [5, 0]]  # hello world | yes <pad>
    assert batch["prompt_mask"].tolist() == [[1, 1], [1, 0]]
    assert batch["block_ids"].tolist() == [
        [[11, 7, 1, 0], [12, 8, 9, 1]],  # <Model_0> a <eos> <pad> | <Model_1> b c <eos>
        [[11, 9, 10, 1], [12, 6, 1, 0]],  # <Model_0> c d <eos> | <Model_1> no <eos> <pad>
    ]
    assert batch["block_mask"].tolist() == [[[1, 1, 1, 0], [1, 1, 1, 1]], [[1, 1, 1, 1], [1, 1, 1, 0]]]
    assert batch["block_targets"].tolist() == [
        [[7, 1, X, X], [8, 9, 1, X]],
        [[9, 10, 1, X], [6, 1, X, X]],
    ]
    assert batch["labels"].tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_collator_cuts_responses_and_drops_eos_of_cut_ones():
    router = tiny_router()
    batch = CausalCollator(router.tokenizer, 2, max_response_len=2)(EXAMPLES[:1])
    assert batch["block_ids"].tolist() == [[[11, 7, 1], [12, 8, 9]]]
    assert batch["block_targets"].tolist() == [[[7, 1, X], [8, 9, X]]]


def test_collator_prompts_batch():
    router = tiny_router()
    batch = CausalCollator(router.tokenizer, 2).prompts([{"prompt": "hello world"}, {"prompt": "yes"}])
    assert batch["prompt_ids"].tolist() == [[3, 4], [5, 0]]
    assert batch["prompt_mask"].tolist() == [[1, 1], [1, 0]]
    cut = CausalCollator(router.tokenizer, 2, max_prompt_len=1)
    assert cut.prompts([{"prompt": "hello world"}])["prompt_ids"].tolist() == [[3]]


def test_collator_needs_the_model_tokens_in_the_vocabulary():
    with pytest.raises(ValueError, match="vocabulary"):
        CausalCollator(word_tokenizer(), 2)


# --- one-pass scoring ------------------------------------------------------------------------------------


def test_one_pass_inputs_exact():
    input_ids, mask, positions = one_pass_inputs(
        torch.tensor([[3, 4], [5, 0]]), torch.tensor([[1, 1], [1, 0]]), torch.tensor([11, 12]), torch.float32
    )
    assert input_ids.tolist() == [[3, 4, 11, 12], [5, 0, 11, 12]]
    assert positions.tolist() == [[0, 1, 2, 2], [0, 1, 1, 1]]  # both ID tokens sit at the prompt length
    allowed = [
        [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 0, 1]],
        [[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1]],  # row 1 is padding: itself only, plus the past
    ]
    expected = torch.where(torch.tensor(allowed, dtype=torch.bool), 0.0, MIN)[:, None]
    assert mask.shape == (2, 1, 4, 4) and mask.dtype == torch.float32
    assert torch.equal(mask, expected)


def separate_pass_logits(router, prompts):
    """The reference: one forward pass per (prompt, candidate), `prompt <Model_t>`, no padding."""
    rows = []
    device = router.head.weight.device
    with torch.no_grad():
        for prompt in prompts:
            ids = router.tokenizer(prompt)["input_ids"]
            row = []
            for t, token_id in enumerate(router.model_token_ids.tolist()):
                hidden = router.lm.base_model(input_ids=torch.tensor([ids + [token_id]], device=device)).last_hidden_state
                row.append(head_logit(router, t, hidden[0, -1]))
            rows.append(row)
    return torch.tensor(rows)  # (B, T)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA")])])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("routing_head", ["shared", "per_candidate"])
def test_one_pass_scores_equal_separate_passes(attention, device, routing_head):
    router = tiny_router(n_candidates=3, attention=attention, routing_head=routing_head).to(device).eval()
    with torch.no_grad():
        router.head.weight.mul_(20.0)  # make the test sensitive: logits of order 10, not 0.1
    examples = [
        {"prompt": "hello world yes no a", "responses": ["a b", "c", "d d d"], "labels": [1.0, 0.0, 0.0]},
        {"prompt": "b", "responses": ["no", "yes yes", ""], "labels": [0.0, 1.0, 1.0]},
    ]
    collate = CausalCollator(router.tokenizer, 3)
    scores = router.score(collate.prompts(examples))
    assert scores.shape == (2, 3)
    reference = separate_pass_logits(router, [example["prompt"] for example in examples])
    assert reference.abs().max() > 1.0
    torch.testing.assert_close(scores, reference, atol=1e-4, rtol=0)
    # the packed training batch (with responses) gives the same routing logits: causality
    batch = {k: v.to(device) for k, v in collate(examples).items()}
    with torch.no_grad():
        routing, _ = router(batch["prompt_ids"], batch["prompt_mask"], batch["block_ids"], batch["block_mask"])
    torch.testing.assert_close(routing.cpu(), reference, atol=1e-4, rtol=0)


@pytest.mark.parametrize("routing_head", ["shared", "per_candidate"])
def test_packed_training_equals_separate_rows(routing_head):
    """Routing logits and the response loss of the packed batch equal T separate rows per query,
    `prompt <Model_t> response_t`, each in its own forward pass with no padding."""
    router = tiny_router(n_candidates=3, routing_head=routing_head).eval()
    examples = [
        {"prompt": "hello world yes no a", "responses": ["a b", "c", "d d d"], "labels": [1.0, 0.0, 0.0]},
        {"prompt": "b", "responses": ["no", "yes yes", ""], "labels": [0.0, 1.0, 1.0]},
    ]
    batch = CausalCollator(router.tokenizer, 3)(examples)
    target_mask = batch["block_targets"] != X
    with torch.no_grad():
        routing, lm_logits = router(batch["prompt_ids"], batch["prompt_mask"], batch["block_ids"], batch["block_mask"],
                                    target_mask)
        rows, logits = [], []
        for b, example in enumerate(examples):
            prompt = router.tokenizer(example["prompt"])["input_ids"]
            for t in range(3):
                block = batch["block_ids"][b, t][batch["block_mask"][b, t].bool()].tolist()
                hidden = router.lm.base_model(input_ids=torch.tensor([prompt + block])).last_hidden_state[0]
                rows.append(head_logit(router, t, hidden[len(prompt)]))
                targets = target_mask[b, t][: len(block)]
                logits.append(router.lm.get_output_embeddings()(hidden[len(prompt):][targets]))
    torch.testing.assert_close(routing, torch.tensor(rows).view(2, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(lm_logits, torch.cat(logits), atol=1e-5, rtol=0)  # same slots, same order


def test_a_per_candidate_head_ranks_candidates_per_query_where_the_shared_head_cannot():
    """With identical ID rows (id_token_noise 0) every `<Model_t>` state is the same, so the shared head
    gives every candidate the same score; per-candidate rows differ, and which candidate leads can
    change with the prompt."""
    prompts = {"prompt": ["hello world", "yes no", "a b c d", "d", "no no a", "world c"]}
    shared = tiny_router(n_candidates=3, id_token_noise=0.0).eval().score(prompts)
    torch.testing.assert_close(shared, shared[:, :1].expand(-1, 3))
    router = tiny_router(n_candidates=3, id_token_noise=0.0, routing_head="per_candidate").eval()
    with torch.no_grad():
        router.head.weight.mul_(20.0)  # scores of order 1, so that ranks are not decided by the biases alone
    scores = router.score(prompts)
    assert (scores[:, 1:] - scores[:, :1]).abs().min() > 1e-3
    assert len(set(scores.argmax(1).tolist())) > 1


def test_routing_head_must_be_known():
    with pytest.raises(ValueError, match="routing_head must be one of"):
        tiny_router(routing_head="per_model")


def test_score_takes_the_evaluations_raw_batches():
    router = tiny_router().eval()
    raw = {"prompt_id": ["p1", "p2"], "benchmark": ["x", "x"], "prompt": ["hello world", "yes"]}
    prompts = CausalCollator(router.tokenizer, 2).prompts(EXAMPLES)
    assert torch.equal(router.score(raw), router.score(prompts))


def test_score_refuses_attention_that_ignores_custom_masks(monkeypatch):
    router = tiny_router()
    monkeypatch.setattr(router.lm.config, "_attn_implementation", "flash_attention_2", raising=False)
    with pytest.raises(ValueError, match="attn_implementation"):
        router.score({"prompt_ids": torch.tensor([[3]]), "prompt_mask": torch.tensor([[1]])})


# --- training -----------------------------------------------------------------------------------------------


def test_lookahead_clm_loss_weights_the_aux_term_by_0_5():
    routing, labels = torch.zeros(1, 2), torch.tensor([[0.0, 1.0]])  # BCE = log 2
    lm_logits, targets = torch.zeros(3, 4), torch.tensor([0, 3, 1])  # CE = log 4
    loss = lookahead_clm_loss(routing, labels, lm_logits, targets)
    assert loss.total.item() == pytest.approx(math.log(2.0) + 0.5 * math.log(4.0), abs=1e-6)


def test_training_loss_backward_reaches_the_model_tokens():
    router = tiny_router()
    batch = CausalCollator(router.tokenizer, 2)(EXAMPLES)
    target_mask = batch["block_targets"] != X
    routing, lm_logits = router(batch["prompt_ids"], batch["prompt_mask"], batch["block_ids"], batch["block_mask"],
                                target_mask)
    assert routing.shape == (2, 2) and lm_logits.shape == (10, 13)  # 2+3+3+2 response tokens incl. EOS; vocab 11 + 2
    loss = router.training_loss(batch)
    loss.total.backward()
    assert loss.total.item() == pytest.approx(loss.routing.item() + 0.5 * loss.aux.item(), rel=1e-6)
    embedding_grad = router.lm.get_input_embeddings().weight.grad
    assert embedding_grad[11].abs().sum() > 0 and embedding_grad[12].abs().sum() > 0
    assert router.head.weight.grad.abs().sum() > 0


def test_forward_checks_the_blocks_start_with_model_tokens():
    router = tiny_router()
    batch = CausalCollator(router.tokenizer, 2)(EXAMPLES)
    with pytest.raises(ValueError, match="<Model_t>"):
        router(batch["prompt_ids"], batch["prompt_mask"], batch["block_ids"].flip(1), batch["block_mask"])


def test_from_pretrained_adds_tokens_and_truncates_layers(tmp_path):
    tiny_llama().save_pretrained(tmp_path)
    word_tokenizer().save_pretrained(tmp_path)
    router = LookaheadCLM.from_pretrained(str(tmp_path), CandidatePool(("x", "y", "z")), num_layers=1)
    assert len(router.lm.model.layers) == 1
    assert router.lm.config._attn_implementation == "sdpa"
    assert router.model_token_ids.tolist() == [11, 12, 13]
    assert router.tokenizer.convert_tokens_to_ids("<Model_2>") == 13
    assert router.lm.get_input_embeddings().weight.shape[0] == 14
    assert router.collator().prompts([{"prompt": "hello world"}])["prompt_ids"].tolist() == [[3, 4]]


def test_a_per_candidate_checkpoint_reloads_with_its_own_rows(tmp_path):
    """router.json carries the head kind, so load_router rebuilds Linear(hidden, T) and the reloaded
    router scores as the saved one did."""
    from lookahead_ray.routers.checkpoint import RouterSpec, build_router, load_router, save_router
    from tests.tiny_models import save_tiny_llama

    spec = RouterSpec(kind="lookahead-clm", backbone=str(save_tiny_llama(tmp_path / "llama")),
                      candidates=("math", "code", "chat"), max_prompt_len=32, max_response_len=8,
                      routing_head="per_candidate")
    torch.manual_seed(0)
    router = build_router(spec).eval()
    with torch.no_grad():
        router.head.weight.normal_()  # distinct trained-looking rows, not the fresh init
    folder = save_router(router, spec, tmp_path / "ckpt")
    reloaded, read = load_router(folder)
    assert read.routing_head == "per_candidate" and reloaded.head.weight.shape[0] == 3
    prompts = {"prompt": ["What is 12 plus 30?", "Write a python function."]}
    torch.testing.assert_close(reloaded.score(prompts), router.score(prompts))
