"""The release importer on the shared data, and its errors on broken copies of it."""

import gzip
import json
import logging
import shutil

import pytest

from lookahead_ray.candidates import PAPER_CANDIDATES
from lookahead_ray.config import DataConfig
from lookahead_ray.data.release import ReleaseFormatError, import_release


def _count(frame, benchmark):
    return int((frame["benchmark"] == benchmark).sum())


def test_reader_counts_on_the_shared_release(release_frame):
    assert _count(release_frame, "SelfOSSInstructSC2_filtered2") == 4335
    assert [_count(release_frame, b) for b in ("GSM8K", "MATH", "HumanEval", "MBPP")] == [945, 3515, 113, 187]


def test_rows_follow_the_configured_candidate_order(release_frame):
    assert all(list(c) == list(PAPER_CANDIDATES) for c in release_frame["candidates"])
    assert all(len(r) == 5 and len(s) == 5 for r, s in zip(release_frame["responses"], release_frame["scores"]))


def test_selfoss_validation_is_the_release_eval_ids(release_frame, release_path):
    path = release_path / "compressed_data/train/SelfOSSInstructSC2_filtered2/eval_ids.json.gz"
    eval_ids = set(json.loads(gzip.open(path, "rt").read()))
    selfoss = release_frame[release_frame["benchmark"] == "SelfOSSInstructSC2_filtered2"]
    assert set(selfoss.loc[selfoss["split"] == "val", "prompt_id"]) == eval_ids
    assert set(selfoss["split"]) == {"train", "val"}


def test_query_keys_are_the_files_keys_not_a_range(release_frame, release_path):
    raw = json.loads(gzip.open(release_path / "compressed_data/test/GSM8k/Yi-1.5-34B-Chat.json.gz", "rt").read())
    gsm = release_frame[release_frame["benchmark"] == "GSM8K"]
    assert list(gsm["prompt_id"]) == list(raw["details"])
    assert list(gsm["prompt_id"]) != [str(i) for i in range(len(gsm))]  # held-back queries leave gaps
    first = raw["details"][gsm["prompt_id"].iloc[0]]
    assert gsm["scores"].iloc[0][0] == float(first["correct"])
    assert gsm["responses"].iloc[0][0] == first["origin_prediction"]


def test_every_test_set_has_a_share_in_every_split(release_frame):
    for benchmark in ("GSM8K", "MATH", "HumanEval", "MBPP"):
        part = release_frame[release_frame["benchmark"] == benchmark]
        assert set(part["split"]) == {"train", "val", "test"}, benchmark


def test_instruction_following_samples(samples_frame):
    counts = samples_frame.groupby("benchmark").size().to_dict()
    assert counts == {"MT-Bench": 3, "AlpacaEval": 3, "ArenaHard": 3}
    mt = samples_frame[samples_frame["benchmark"] == "MT-Bench"].iloc[0]
    aux = json.loads(mt["aux"])
    for score, turns in zip(mt["scores"], aux["turn_scores"]):
        graded = [g for g in turns if g != -1]
        assert score == sum(graded) / len(graded)
    assert mt["prompt"].startswith("Compose an engaging travel blog post")
    assert mt["responses"][0] and "[The End of Assistant" not in mt["responses"][0]


def test_other_models_files_are_ignored(tmp_path, samples_path):
    copy = tmp_path / "release"
    shutil.copytree(samples_path, copy)
    extra = copy / "compressed_data/test/ArenaHard/model_judgment/gemma-2-9b-it.jsonl.gz"
    shutil.copy(copy / "compressed_data/test/ArenaHard/model_judgment/Yi-1.5-34B-Chat.jsonl.gz", extra)
    frame = import_release(copy)
    assert all(list(c) == list(PAPER_CANDIDATES) for c in frame["candidates"])


def test_a_configured_candidate_without_a_file_is_named(samples_path):
    config = DataConfig(candidates=PAPER_CANDIDATES + ("gpt-5-mini",))
    with pytest.raises(ReleaseFormatError, match="candidate 'gpt-5-mini' has no file"):
        import_release(samples_path, config)


def test_a_subset_of_candidates_in_any_order(samples_path):
    config = DataConfig(candidates=("Qwen2.5-Coder-7B-Instruct", "Yi-1.5-34B-Chat"))
    frame = import_release(samples_path, config)
    full = import_release(samples_path)
    assert [list(s) for s in frame["scores"]] == [[s[4], s[0]] for s in full["scores"]]


def _broken_copy(tmp_path, samples_path):
    copy = tmp_path / "release"
    shutil.copytree(samples_path, copy)
    return copy


def test_malformed_json_names_the_file(tmp_path, samples_path):
    copy = _broken_copy(tmp_path, samples_path)
    path = copy / "compressed_data/test/ArenaHard/question.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write('{"question_id": "x", "turns": [\n')
    with pytest.raises(ReleaseFormatError, match=r"question\.jsonl\.gz: line 1: not valid JSON"):
        import_release(copy)


def test_missing_field_names_the_file_and_field(tmp_path, samples_path):
    copy = _broken_copy(tmp_path, samples_path)
    path = copy / "compressed_data/test/AlpacaEval/Phi-3-medium-4k-instruct/weighted_alpaca_eval_gpt4_turbo/annotations.json.gz"
    records = json.loads(gzip.open(path, "rt").read())
    del records[1]["preference"]
    with gzip.open(path, "wt") as handle:
        json.dump(records, handle)
    with pytest.raises(ReleaseFormatError, match=r"annotations\.json\.gz: \[1\]: missing field 'preference'"):
        import_release(copy)


def test_non_numeric_score_names_the_field(tmp_path, samples_path):
    copy = _broken_copy(tmp_path, samples_path)
    path = copy / "compressed_data/test/MT-Bench/judgments/gpt-4-0125-preview_judge_Yi-1.5-34B-Chat_single.jsonl.gz"
    lines = gzip.open(path, "rt").read().splitlines()
    record = json.loads(lines[2])
    record["score"] = "nine"
    lines[2] = json.dumps(record)
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(lines))
    with pytest.raises(ReleaseFormatError, match=r"_single\.jsonl\.gz: line 3: field 'score' is not a number"):
        import_release(copy)


def test_uncompressed_files_are_read_too(tmp_path, samples_path):
    copy = _broken_copy(tmp_path, samples_path)
    path = copy / "compressed_data/test/ArenaHard/question.jsonl.gz"
    path.with_suffix("").write_text(gzip.open(path, "rt").read())
    path.unlink()
    assert _count(import_release(copy), "ArenaHard") == 3


def test_absent_optional_sets_warn_once_each(samples_path, caplog):
    with caplog.at_level(logging.WARNING, logger="lookahead_ray.data.release"):
        import_release(samples_path)
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping")]
    assert len(skipped) == 7  # three training sets and GSM8K, MATH, HumanEval, MBPP
    assert len(set(skipped)) == 7


def test_a_question_without_judgment_is_skipped_with_a_warning(tmp_path, samples_path, caplog):
    copy = _broken_copy(tmp_path, samples_path)
    path = copy / "compressed_data/test/ArenaHard/model_judgment/Llama-3.1-8B-Instruct.jsonl.gz"
    lines = gzip.open(path, "rt").read().splitlines()
    dropped = json.loads(lines[0])["question_id"]
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(lines[1:]))
    with caplog.at_level(logging.WARNING):
        frame = import_release(copy)
    assert _count(frame, "ArenaHard") == 2
    assert dropped not in set(frame["prompt_id"])
    assert any(dropped in r.getMessage() for r in caplog.records)


def test_an_empty_set_is_an_error_not_zero_rows(tmp_path, samples_path):
    copy = _broken_copy(tmp_path, samples_path)
    for path in (copy / "compressed_data/test/ArenaHard").rglob("*.gz"):
        with gzip.open(path, "wt") as handle:
            handle.write("")
    with pytest.raises(ReleaseFormatError, match="no records"):
        import_release(copy)


def test_a_folder_that_is_no_release_is_an_error(tmp_path):
    with pytest.raises(ReleaseFormatError, match="not a release folder"):
        import_release(tmp_path)
