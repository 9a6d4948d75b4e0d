"""The training step and the predictor on each device torch sees: CPU always, CUDA where there is one.

On CUDA the step runs under the loop's mixed precision (bf16 autocast, or fp16 with a GradScaler),
so these are the GPU code paths of `training/loop.py` and `routers/predictor.py`, without Ray.
"""

import pytest
import torch

from lookahead_ray.config import TrainConfig
from lookahead_ray.routers.predictor import RouterPredictor, pick_device
from lookahead_ray.routers.checkpoint import RouterSpec, build_router, save_router
from lookahead_ray.training.loop import apply_update, collate, make_optimizer, micro_loss, mixed_precision
from tests.tiny_models import save_tiny_bert, save_tiny_llama

CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")])
DEVICES = ["cpu", CUDA]
KINDS = ["mlc", "lookahead-mlm", "lookahead-clm"]
CANDIDATES = ("math", "code", "chat")
EXAMPLES = [
    {"prompt": "What is 12 plus 30?", "responses": ["The answer is 42.", "def add", "a poem"], "labels": [1.0, 0.0, 0.0]},
    {"prompt": "Write a python function that returns the sum of a list.",
     "responses": ["x = 5", "def add(a, b): return a + b", "the sea"], "labels": [0.0, 1.0, 0.0]},
    {"prompt": "Compose a short poem about the sea and the sky.",
     "responses": ["5", "return", "the sea and the sky"], "labels": [0.0, 0.0, 1.0]},
]


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    root = tmp_path_factory.mktemp("backbones")
    return {"bert": str(save_tiny_bert(root / "bert")), "llama": str(save_tiny_llama(root / "llama"))}


def spec_for(kind: str, backbones: dict[str, str]) -> RouterSpec:
    backbone = backbones["llama" if kind == "lookahead-clm" else "bert"]
    return RouterSpec(kind=kind, backbone=backbone, candidates=CANDIDATES, max_prompt_len=32, block_len=8,
                      max_response_len=8)


def saved_router(kind: str, backbones: dict[str, str], tmp_path) -> tuple[str, list[str]]:
    """(a freshly built router saved as a checkpoint folder, the example prompts)."""
    torch.manual_seed(0)
    spec = spec_for(kind, backbones)
    return str(save_router(build_router(spec), spec, tmp_path / kind)), [example["prompt"] for example in EXAMPLES]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_training_steps_lower_the_loss_under_the_loops_precision(kind, device, backbones):
    torch.manual_seed(0)
    cfg = TrainConfig(router=kind, lr=3e-3, warmup_steps_ratio=0.0)
    model = build_router(spec_for(kind, backbones)).to(device).train()
    optimizer, scheduler = make_optimizer(model, cfg, steps=1000)
    autocast, scaler = mixed_precision(torch.device(device))
    batch = {k: v.to(device) for k, v in collate(model, cfg, EXAMPLES, rate=0.5).items()}
    losses = []
    for _ in range(25):
        with autocast():
            loss = micro_loss(model, cfg, batch)
        (scaler.scale(loss.total) if scaler else loss.total).backward()
        apply_update(model, optimizer, scheduler, scaler, cfg.max_grad_norm)
        losses.append(loss.total.item())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_predictor_scores_agree_across_devices(kind, device, backbones, tmp_path):
    folder, prompts = saved_router(kind, backbones, tmp_path)
    reference = RouterPredictor.load(folder, device="cpu").score({"prompt": prompts})
    predictor = RouterPredictor.load(folder, device=device)
    assert next(predictor.model.parameters()).device.type == device
    scores = predictor.score({"prompt": prompts})
    assert scores.device.type == "cpu" and scores.shape == (3, 3)
    torch.testing.assert_close(scores, reference, atol=1e-4, rtol=1e-4)
    picks, _ = predictor.route(prompts)
    assert picks == [CANDIDATES[i] for i in reference.argmax(dim=1).tolist()]


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            pick_device("cuda")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_bfloat16_scoring_stays_close_to_float32(kind, device, backbones, tmp_path):
    folder, prompts = saved_router(kind, backbones, tmp_path)
    reference = RouterPredictor.load(folder, device=device).score({"prompt": prompts})
    scores = RouterPredictor.load(folder, device=device, precision="bfloat16").score({"prompt": prompts})
    assert scores.dtype == torch.float32 and scores.shape == reference.shape
    torch.testing.assert_close(scores, reference, atol=0.05, rtol=0.05)
    assert not torch.equal(scores, reference)  # the forward did run in bfloat16


def test_unknown_precision_is_refused(backbones, tmp_path):
    folder, _ = saved_router("mlc", backbones, tmp_path)
    with pytest.raises(ValueError, match="precision"):
        RouterPredictor.load(folder, device="cpu", precision="float16")


@pytest.mark.parametrize("kind", ["lookahead-mlm", "lookahead-clm"])
def test_a_ramped_weight_of_zero_leaves_the_routing_loss_alone(kind, backbones):
    torch.manual_seed(0)
    cfg = TrainConfig(router=kind, aux_ramp_ratio=0.5)
    model = build_router(spec_for(kind, backbones)).eval()
    batch = collate(model, cfg, EXAMPLES, rate=0.5)
    start, full = micro_loss(model, cfg, batch, cfg.aux_weight_at(0, 10)), micro_loss(model, cfg, batch)
    assert start.aux.item() > 0 and start.total.item() == pytest.approx(start.routing.item())
    assert full.total.item() == pytest.approx(full.routing.item() + cfg.response_loss_weight * full.aux.item())
