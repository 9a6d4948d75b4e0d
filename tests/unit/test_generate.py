"""Generation bookkeeping without Ray or a model: shards, resume, settings, engine options."""

import json

import pandas as pd
import pytest

from lookahead_ray.config import CandidateSpec, PoolConfig, SamplingConfig, load_pool
from lookahead_ray.data import generate as G
from lookahead_ray.data.prompts import prompt_frame


def prompts(n: int) -> pd.DataFrame:
    return prompt_frame({"prompt_id": str(i), "benchmark": "B", "prompt": f"p{i}", "grader": "math",
                         "reference": json.dumps({"answer": str(i)})} for i in range(n))


def pool(*names: str, **sampling) -> PoolConfig:
    return PoolConfig(tuple(CandidateSpec(name=n, model="m", engine="hf", sampling=SamplingConfig(**sampling))
                            for n in names))


def output_rows(candidate: str, shard: int, ids: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"prompt_id": [str(i) for i in ids], "benchmark": "B", "candidate": candidate,
                         "response": "r", "input_tokens": 3, "output_tokens": 2, "latency_s": 0.1,
                         "finish_reason": "stop", "shard": shard})


def test_shards_cover_the_prompts_in_order():
    assert G.shard_count(10, 4) == 3
    frames = G.work_rows(prompts(10), pool("a").candidates[0], [0, 2], 4)
    assert [list(f["prompt_id"]) for f in frames] == [["0", "1", "2", "3"], ["8", "9"]]
    assert set(frames[1]["shard"]) == {2} and set(frames[1]["candidate"]) == {"a"}
    assert json.loads(frames[0]["sampling"].iloc[0])["max_tokens"] == 256


def test_writer_writes_a_shard_only_when_complete_and_once(tmp_path):
    writer = G.ShardWriter(tmp_path, {("a", 0): 3, ("a", 1): 1})
    writer.add(output_rows("a", 0, [0, 1]))
    assert not G.shard_path(tmp_path, "a", 0).exists()
    writer.add(pd.concat([output_rows("a", 0, [1, 2]), output_rows("a", 1, [3])]))  # "1" delivered twice
    shard = pd.read_parquet(G.shard_path(tmp_path, "a", 0))
    assert list(shard["prompt_id"]) == ["0", "1", "2"] and list(shard.columns) == list(G.OUTPUT_COLUMNS)
    writer.add(output_rows("a", 0, [2]))  # a late duplicate of a written shard is ignored
    assert len(pd.read_parquet(G.shard_path(tmp_path, "a", 0))) == 3
    writer.check_done()
    assert not list(tmp_path.rglob("*.tmp-*"))


def test_writer_reports_incomplete_shards(tmp_path):
    writer = G.ShardWriter(tmp_path, {("a", 0): 2})
    writer.add(output_rows("a", 0, [0]))
    with pytest.raises(RuntimeError, match="1 shard"):
        writer.check_done()


def test_missing_shards_and_a_rerun_that_changes_nothing(tmp_path):
    the_pool, the_prompts, options = pool("a", "b/c"), prompts(5), G.GenerateOptions(shard_size=2)
    G.prepare_output(tmp_path, the_pool, the_prompts, options)
    G.write_atomic(output_rows("a", 1, [2, 3]), G.shard_path(tmp_path, "a", 1))
    assert G.shard_path(tmp_path, "b/c", 0).parent.name == "b_c"
    assert G.missing_shards(tmp_path, the_pool.names, 5, 2) == {"a": [0, 2], "b/c": [0, 1, 2]}
    (G.candidate_dir(tmp_path, "a") / ".shard-00000.parquet.tmp-99").write_text("partial")
    G.prepare_output(tmp_path, the_pool, the_prompts, options)  # a rerun: accepted, sweeps partial files
    assert not list(tmp_path.rglob("*.tmp-*"))


def test_a_rerun_must_ask_for_the_same_prompts_shards_and_settings(tmp_path):
    G.prepare_output(tmp_path, pool("a"), prompts(5), G.GenerateOptions(shard_size=2))
    with pytest.raises(ValueError, match="different prompt set"):
        G.prepare_output(tmp_path, pool("a"), prompts(6), G.GenerateOptions(shard_size=2))
    with pytest.raises(ValueError, match="--shard-size 2"):
        G.prepare_output(tmp_path, pool("a"), prompts(5), G.GenerateOptions(shard_size=3))
    with pytest.raises(ValueError, match=r"candidate 'a' changed \['sampling'\]"):
        G.prepare_output(tmp_path, pool("a", max_tokens=7), prompts(5), G.GenerateOptions(shard_size=2))


def test_read_generation_round_trip(tmp_path):
    the_pool = pool("a", "b", temperature=0.5)
    G.prepare_output(tmp_path, the_pool, prompts(3), G.GenerateOptions(shard_size=2))
    G.write_atomic(output_rows("a", 0, [0, 1]), G.shard_path(tmp_path, "a", 0))
    got_prompts, responses, got_pool = G.read_generation(tmp_path)
    assert got_pool == the_pool and len(got_prompts) == 3 and len(responses) == 2
    with pytest.raises(FileNotFoundError, match="generation.json"):
        G.read_generation(tmp_path / "nope")


def test_engine_groups_share_model_and_engine():
    specs = (CandidateSpec(name="a", model="m"), CandidateSpec(name="b", model="m", engine="hf"),
             CandidateSpec(name="c", model="m"), CandidateSpec(name="d", model="n"))
    groups = G.engine_groups(PoolConfig(specs))
    assert [[s.name for s in g] for g in groups] == [["a", "c"], ["b"], ["d"]]


def test_vllm_settings_for_cpu_and_gpu():
    cpu = CandidateSpec(name="a", model="m", num_cpus=1.0)
    gpu = CandidateSpec(name="b", model="m", num_gpus=1, tensor_parallel_size=2)
    options = G.GenerateOptions()
    assert G.placement_group(cpu) == {"bundles": [{"CPU": 1.0}]}
    assert G.placement_group(gpu)["bundles"] == [{"GPU": 1, "CPU": 1}] * 2
    cpu_kwargs, gpu_kwargs = G.vllm_engine_kwargs(cpu, options), G.vllm_engine_kwargs(gpu, options)
    assert (cpu_kwargs["gpu_memory_utilization"], cpu_kwargs["enforce_eager"]) == (0.2, True)
    assert (gpu_kwargs["gpu_memory_utilization"], gpu_kwargs["enforce_eager"]) == (0.9, False)
    assert gpu_kwargs["tensor_parallel_size"] == 2
    assert "seed" not in G.vllm_sampling({"temperature": 0.7, "top_p": 0.9, "max_tokens": 5, "seed": 3})


def test_options_are_checked():
    with pytest.raises(ValueError, match="--shard-size"):
        G.GenerateOptions(shard_size=0)
    with pytest.raises(ValueError, match="--dtype"):
        G.GenerateOptions(dtype="int3")


def test_progress_reports_rows_and_tokens_per_second():
    progress = G.Progress(total=4, every_s=1e9, label="gen")
    progress.update(output_rows("a", 0, [0, 1]))
    line = progress.line()
    assert line.startswith("gen: 2/4 rows,") and "rows/s" in line and "output tokens/s" in line
    assert progress.summary()["output_tokens"] == 4


def test_hf_stop_rule_drops_the_end_token_and_counts_it_like_vllm():
    from lookahead_ray.data.hf_core import Ending, end_answer

    assert end_answer([5, 6, 2, 3, 3], {2}, 5) == Ending([5, 6], "stop", 3)
    assert end_answer([5, 6, 7], {2}, 3) == Ending([5, 6, 7], "length", 3)


def test_default_cpu_pool_has_three_smollm2_candidates_on_one_engine():
    the_pool = load_pool(G.Path(__file__).resolve().parents[2] / "configs" / "pool-cpu.yaml")
    assert len(the_pool.candidates) >= 3
    assert {c.model for c in the_pool.candidates} == {"smollm2"}
    assert len(G.engine_groups(the_pool)) == 1
    settings = {(c.system_prompt, c.sampling) for c in the_pool.candidates}
    assert len(settings) == len(the_pool.candidates)  # each candidate is set up differently


class DyingDataset:
    """Streams shard 0 of candidate `a`, then fails as Ray Data does once an engine actor has died
    past its restarts."""

    def iter_batches(self, **_):
        yield output_rows("a", 0, [0, 1])
        raise RuntimeError("ActorDiedError: the engine actor died 3 times")


def test_a_dead_engine_fails_naming_candidate_and_shard_and_keeps_finished_shards(tmp_path, monkeypatch):
    monkeypatch.setattr(G, "group_dataset", lambda *args, **kwargs: DyingDataset())
    monkeypatch.setattr("lookahead_ray.backbones.resolve", lambda name: name)
    options = G.GenerateOptions(shard_size=2, engine_restarts=2)
    the_pool = pool("a")
    G.prepare_output(tmp_path, the_pool, prompts(4), options)
    todo = G.missing_shards(tmp_path, the_pool.names, 4, 2)
    with pytest.raises(RuntimeError, match=r"candidate\(s\) a failed after 2 restart.*a shard 1.*rerun") as err:
        G.run_group(prompts(4), list(the_pool.candidates), todo, tmp_path, options)
    assert "ActorDiedError" in str(err.value)
    assert G.shard_path(tmp_path, "a", 0).exists() and not G.shard_path(tmp_path, "a", 1).exists()
    assert G.missing_shards(tmp_path, the_pool.names, 4, 2) == {"a": [1]}  # the rerun does only shard 1


def test_engine_actors_get_bounded_restarts():
    assert G.bounded_retries(G.GenerateOptions(engine_restarts=3)) == {"max_restarts": 3, "max_task_retries": 3}
    with pytest.raises(ValueError, match="engine-restarts"):
        G.GenerateOptions(engine_restarts=-1)


def test_auto_dtype_is_float32_on_a_cpu_without_native_bf16(tmp_path, monkeypatch):
    from lookahead_ray import candidates as C

    plain, amx = tmp_path / "plain", tmp_path / "amx"
    plain.write_text("flags\t\t: fpu sse avx2 fma\n")
    amx.write_text("flags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n")
    assert not C.cpu_has_bf16(str(plain)) and C.cpu_has_bf16(str(amx))
    assert not C.cpu_has_bf16(str(tmp_path / "missing"))
    monkeypatch.setattr(C, "cpu_has_bf16", lambda: False)
    assert C.engine_dtype("auto", gpu=False) == "float32"
    assert C.engine_dtype("auto", gpu=True) == "auto"  # a GPU keeps the checkpoint's bf16
    assert C.engine_dtype("bfloat16", gpu=False) == "bfloat16"  # an explicit --dtype is obeyed
    spec = G.CandidateSpec(name="c", model="smollm2")
    assert G.vllm_engine_kwargs(spec, G.GenerateOptions())["dtype"] == "float32"
    monkeypatch.setattr(C, "cpu_has_bf16", lambda: True)
    assert C.engine_dtype("auto", gpu=False) == "auto"
