"""`lookahead-ray grade`: every response of a generation folder graded on Ray Data.

One row per (prompt, candidate) goes through `GradeRows` (math, code and reasoning-gym graders,
see lookahead_ray/data/graders/) and then, for rows graded by a reward model, `RewardScorer`.
The result is the routing dataset: one row per prompt, responses and scores in pool order.
"""

from __future__ import annotations

import dataclasses
import json

from lookahead_ray.config import DataConfig, to_dict
from lookahead_ray.data.graders.code import code_program, completion_body, extract_code, grade_code
from lookahead_ray.data.graders.math import extract_final_answer, grade_math, last_boxed
from lookahead_ray.data.graders.reward import RewardModel, reward_text
from lookahead_ray.data.sandbox import CodeResult, SandboxInfo, run_code_tests
from lookahead_ray.data.splits import assign_split

__all__ = ["CodeResult", "RewardModel", "SandboxInfo", "code_program", "completion_body", "extract_code",
           "extract_final_answer", "grade_code", "grade_math", "last_boxed", "reward_text", "run_code_tests"]

GRADE_BLOCK_ROWS = 8
"""Rows per Ray Data block of the grading map: small, so that workers share the code samples."""


def grade_response(grader: str, reference: dict, response: str, timeout_s: float = 10.0) -> tuple[float, str, str]:
    """(score, status, message) of one response. grader: math | code | reasoning-gym."""
    if grader == "math":
        score = grade_math(response, str(reference["answer"]))
        found = extract_final_answer(response)
        return score, "pass" if score else "fail", f"answer {found!r}, expected {reference['answer']!r}"
    if grader == "code":
        # The prompt's stub runs in the tests' cell too: its helpers are judged as the prompt wrote them.
        entry_point = reference.get("entry_point")
        result = run_code_tests(code_program(response, reference), reference["tests"], timeout_s, entry_point,
                                trusted=reference.get("prefix") if entry_point else None)
        return (1.0 if result.passed else 0.0), result.status, result.message
    if grader == "reasoning-gym":
        import reasoning_gym  # heavy: only for reasoning-gym prompts

        lines = [line.strip() for line in response.strip().splitlines() if line.strip()]
        answer = lines[-1] if lines else ""
        score = float(reasoning_gym.get_score_answer_fn(reference["dataset"])(answer, reference["entry"]))
        return score, "pass" if score >= 1.0 else "fail", f"answer {answer[:100]!r}"
    raise ValueError(f"grader {grader!r} is not a rule-based grader (reward prompts need --reward-model)")


class GradeRows:
    """Ray Data stage: score, status and message for every row that is not graded by a reward model."""

    def __init__(self, timeout_s: float = 10.0):
        self.timeout_s = timeout_s

    def __call__(self, batch):
        scores, statuses, messages = [], [], []
        for grader, reference, response in zip(batch["grader"], batch["reference"], batch["response"]):
            if grader == "reward":
                score, status, message = float("nan"), "pending", "waits for the reward model"
            else:
                score, status, message = grade_response(grader, json.loads(reference), response, self.timeout_s)
            scores.append(score)
            statuses.append(status)
            messages.append(message)
        return batch.assign(score=scores, status=statuses, message=messages)


class RewardScorer:
    """Ray Data stage: the reward model's score for the rows whose grader is `reward`."""

    def __init__(self, model: str):
        self.reward_model = RewardModel(model)

    def __call__(self, batch):
        todo = (batch["grader"] == "reward").to_numpy()
        if not todo.any():
            return batch
        batch = batch.copy()
        rewards = self.reward_model.score(list(batch.loc[todo, "prompt"]), list(batch.loc[todo, "response"]))
        batch.loc[todo, "score"] = rewards
        batch.loc[todo, "status"] = "scored"
        batch.loc[todo, "message"] = "reward model"
        return batch


def response_rows(prompts, responses, names: tuple[str, ...]):
    """One row per (prompt, candidate of the pool), with the prompt's grader and reference.

    Raises, naming an example, when a response is missing or duplicated: rerun generate first.
    """
    keys = ["benchmark", "prompt_id"]
    responses = responses[responses["candidate"].isin(names)]
    duplicated = responses.duplicated(subset=keys + ["candidate"])
    if duplicated.any():
        first = responses[duplicated].iloc[0]
        raise ValueError(f"duplicate response for ({first.benchmark}, {first.prompt_id}, {first.candidate})")
    rows = prompts.merge(responses, on=keys, how="left", indicator=False)
    have = rows.groupby(keys, sort=False)["candidate"].apply(lambda c: set(c.dropna()))
    missing = [(key, name) for key, got in have.items() for name in names if name not in got]
    if missing:
        (benchmark, prompt_id), name = missing[0]
        raise ValueError(f"{len(missing)} (prompt, candidate) responses are missing, e.g. ({benchmark}, "
                         f"{prompt_id}, {name}); rerun generate with the same --out to complete them")
    return rows.reset_index(drop=True)


def routing_frame(graded, prompts, names: tuple[str, ...], split_config):
    """The routing-dataset rows: one per prompt, responses and scores in pool order."""
    import pandas as pd  # heavy: grade.py itself loads only the graders

    by_key = {(r.benchmark, r.prompt_id, r.candidate): r for r in graded.itertuples(index=False)}
    rows = []
    for p in prompts.itertuples(index=False):
        graded_rows = [by_key[(p.benchmark, p.prompt_id, name)] for name in names]
        aux = {"grader": p.grader,
               "grades": [{"status": g.status, "message": g.message} for g in graded_rows],
               "output_tokens": [int(g.output_tokens) for g in graded_rows],
               "latency_s": [round(float(g.latency_s), 4) for g in graded_rows],
               "finish_reason": [g.finish_reason for g in graded_rows]}
        rows.append({"prompt_id": p.prompt_id, "benchmark": p.benchmark, "prompt": p.prompt,
                     "candidates": list(names), "responses": [g.response for g in graded_rows],
                     "scores": [float(g.score) for g in graded_rows],
                     "split": assign_split(p.benchmark, p.prompt_id, split_config), "aux": json.dumps(aux)})
    return pd.DataFrame(rows)


def grade_generation(in_dir, out_dir, config=None, reward_model: str | None = None, workers: int = 2,
                     timeout_s: float = 10.0):
    """Grade every response of a generation folder on Ray Data; write the routing dataset."""
    import ray.data  # heavy: Ray only when grading runs

    from lookahead_ray.data.generate import read_generation  # heavy (pandas): grade.py loads only the graders
    from lookahead_ray.data.schema import write_dataset  # heavy (pandas, pyarrow): as above

    config = config or DataConfig()
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    prompts, responses, pool = read_generation(in_dir)
    rows = response_rows(prompts, responses, pool.names)
    needs_reward = sorted(set(rows.loc[rows["grader"] == "reward", "benchmark"]))
    if needs_reward and reward_model is None:
        raise ValueError(f"--reward-model: the prompts of {needs_reward} are graded by a reward model; "
                         "pass --reward-model ID (an HF sequence-classification model)")
    blocks = [rows.iloc[i:i + GRADE_BLOCK_ROWS] for i in range(0, len(rows), GRADE_BLOCK_ROWS)]
    ds = ray.data.from_pandas(blocks).map_batches(
        GradeRows, fn_constructor_kwargs={"timeout_s": timeout_s}, batch_size=GRADE_BLOCK_ROWS,
        batch_format="pandas", concurrency=workers, num_cpus=0.5)
    if needs_reward:
        ds = ds.map_batches(RewardScorer, fn_constructor_kwargs={"model": reward_model}, batch_size=GRADE_BLOCK_ROWS,
                            batch_format="pandas", concurrency=1, num_cpus=0.5)
    frame = routing_frame(ds.to_pandas(), prompts, pool.names, config.split)
    data_config = DataConfig(candidates=pool.names, labels=config.labels, split=config.split)
    manifest = {"source": str(in_dir), **to_dict(data_config), "reward_model": reward_model,
                "pool": [dataclasses.asdict(c) for c in pool.candidates]}
    write_dataset(frame, out_dir, manifest)
    return frame


def mean_scores(frame):
    """Mean raw score per benchmark (rows) and candidate (columns) of a routing-dataset frame."""
    import pandas as pd  # heavy: grade.py itself loads only the graders

    names = list(frame["candidates"].iloc[0])
    table = pd.DataFrame([list(s) for s in frame["scores"]], columns=names)
    table["benchmark"] = frame["benchmark"].to_numpy()
    return table.groupby("benchmark", sort=False).mean()


def format_scores(frame) -> str:
    return mean_scores(frame).to_string(float_format=lambda x: f"{x:.3f}")
