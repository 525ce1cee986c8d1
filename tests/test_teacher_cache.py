"""The teacher-score cache: computed once, reused, resumed after an interruption, recomputed when damaged,
and refused (one line) when an explicit file was made for another teacher or max length."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from ablations.data.teacher_cache import TeacherCache
from probe.errors import BadInput

KEY = {"teacher": "cross-encoder:abc", "teacher_max_length": 128, "data": {"collections": ["dl21"]}}


def pairs(n=10):
    return pd.DataFrame(
        {"query_id": [f"q{i // 4}" for i in range(n)], "group": 0, "doc_id": [f"d{i}" for i in range(n)]}
    )


class Teacher:
    def __init__(self, fail_after=None):
        self.calls, self.fail_after = 0, fail_after

    def __call__(self, rows):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        return np.array([float(d[1:]) for d in rows["doc_id"]])


def test_computed_once_then_read(monkeypatch, tmp_path):
    monkeypatch.setenv("MICE_CACHE", str(tmp_path))
    t = Teacher()
    first = TeacherCache(KEY).get(pairs, t, progress=False, chunk=4)
    assert t.calls == 3 and first["teacher"].tolist() == list(map(float, range(10)))
    again = TeacherCache(KEY).get(pairs, t, progress=False, chunk=4)
    assert t.calls == 3 and again.equals(first)
    # another teacher or max length is another cache (default location: the key names the file)
    other = TeacherCache({**KEY, "teacher_max_length": 256})
    assert other.path != TeacherCache(KEY).path
    other.get(pairs, t, progress=False, chunk=4)
    assert t.calls == 6


def test_an_interrupted_run_resumes_from_its_chunks(tmp_path):
    path = tmp_path / "t.parquet"
    with pytest.raises(KeyboardInterrupt):
        TeacherCache(KEY, path).get(pairs, Teacher(fail_after=2), progress=False, chunk=4)
    assert not path.exists() and len(list((tmp_path / "t.parts").glob("part-*.npy"))) == 2
    t = Teacher()
    out = TeacherCache(KEY, path).get(pairs, t, progress=False, chunk=4)
    assert t.calls == 1 and out["teacher"].tolist() == list(map(float, range(10)))
    assert not (tmp_path / "t.parts").exists()


@pytest.mark.parametrize("damage", ["truncate", "flip", "no-manifest"])
def test_a_damaged_cache_is_detected_and_recomputed(tmp_path, capsys, damage):
    path = tmp_path / "t.parquet"
    TeacherCache(KEY, path).get(pairs, Teacher(), progress=False)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        path.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    else:
        path.with_suffix(".json").unlink()
    t = Teacher()
    cache = TeacherCache(KEY, path)
    assert cache.load() is None  # what the trainer does first: verify, then get
    out = cache.get(pairs, t, progress=False)
    assert t.calls == 1 and out["teacher"].tolist() == list(map(float, range(10)))
    assert capsys.readouterr().err.count("truncated or corrupt") == 1  # reported once, not per call
    assert cache.load() is out  # the rewritten table, without reading the file again
    assert TeacherCache(KEY, path).load() is not None  # rewritten intact


def test_an_explicit_cache_of_another_teacher_is_refused(tmp_path):
    path = tmp_path / "t.parquet"
    TeacherCache(KEY, path).get(pairs, Teacher(), progress=False)
    with pytest.raises(BadInput) as exc:
        TeacherCache({**KEY, "teacher_max_length": 256}, path).get(pairs, Teacher(), progress=False)
    msg = str(exc.value)
    assert "teacher_max_length 128" in msg and "needs teacher_max_length 256" in msg and "\n" not in msg
    with pytest.raises(BadInput, match='made for teacher "cross-encoder:abc"'):
        TeacherCache({**KEY, "teacher": "cross-encoder:xyz"}, path).load()
    assert json.loads(path.with_suffix(".json").read_text())["key"]["teacher_max_length"] == 128


class LengthTeacher:
    """A cheap stand-in teacher over real texts: the document's length in words."""

    def __init__(self, max_length):
        self.name, self.max_length, self.pairs = "length-teacher", max_length, 0

    def score_ids(self, pairs, queries, docs, **kw):
        self.pairs += len(pairs)
        return np.array([len(docs[d].split()) for _, d in pairs], dtype=float)


@pytest.mark.slow
def test_distillation_data_shares_one_cache_and_refuses_another_teachers(tmp_path, monkeypatch):
    from ablations.data.training import distillation_groups

    monkeypatch.setenv("MICE_CACHE", str(tmp_path / "cache"))
    kw = dict(exclude_queries=set(), dev_queries=3, groups_per_query=1, group_size=4, depth=8, seed=0)
    path = tmp_path / "teacher.parquet"
    first = LengthTeacher(128)
    groups = distillation_groups(["dl21"], **kw, teacher=first, teacher_cache=path, progress=False)
    assert first.pairs == 4 * len(groups) and path.is_file()
    again = LengthTeacher(128)  # a second student: read back, nothing scored
    same = distillation_groups(["dl21"], **kw, teacher=again, teacher_cache=path, progress=False)
    assert again.pairs == 0 and [g.teacher for g in same] == [g.teacher for g in groups]
    with pytest.raises(BadInput, match="teacher_max_length 128, this run needs teacher_max_length 256"):
        distillation_groups(["dl21"], **kw, teacher=LengthTeacher(256), teacher_cache=path, progress=False)


def test_crop_query_is_a_span_of_one_sentence_with_content_words():
    import random

    from bm25s.stopwords import STOPWORDS_EN

    from ablations.data.training import crop_query

    text = (
        "The Overman, or Superman, is Nietzsche's goal for humanity. It is. Friedrich wrote about it often."
    )
    flat = re.sub(r"[^\w\s']", "", text.lower())
    for seed in range(50):
        q = crop_query(text, random.Random(seed))
        words = q.split()
        assert 4 <= len(words) <= 8 and q in flat  # consecutive words of the text, punctuation stripped
        assert sum(w not in STOPWORDS_EN for w in words) >= 3  # bm25s' English stopwords
        assert crop_query(text, random.Random(seed)) == q  # the rng decides, nothing else
    assert crop_query("Too short. So is this.", random.Random(0)) is None
    assert crop_query("it is the one that is in it and of the", random.Random(0)) is None  # stopwords only


@pytest.mark.slow
def test_pseudo_query_groups_hold_their_source_passage_and_are_cached(tmp_path, monkeypatch):
    from ablations.data.training import pseudo_query_groups, test_passages, training_pool

    monkeypatch.setenv("MICE_CACHE", str(tmp_path / "cache"))
    excluded = test_passages(["dl19", "dl20"])
    pool = training_pool(["dl21"], excluded)
    kw = dict(passages=12, exclude_docs=excluded, group_size=5, depth=20, seed=0)
    path = tmp_path / "teacher.parquet"
    first = LengthTeacher(128)
    record: dict = {}
    groups = pseudo_query_groups(
        ["dl21"], **kw, teacher=first, teacher_cache=path, progress=False, record=record
    )
    assert 8 <= len(groups) <= 12 and first.pairs == 5 * len(groups)
    assert record["pseudo_rows"] == first.pairs and (tmp_path / "teacher.pseudo.parquet").is_file()
    texts = set(pool.values())
    for g in groups:
        assert len(g.docs) == 5 == len(set(g.docs)) and set(g.docs) <= texts
        # the first passage is the one the query was cropped from
        assert all(w in g.docs[0].lower() for w in g.query.split())
        assert g.teacher == [float(len(d.split())) for d in g.docs]
        assert not set(g.docs) & excluded[1]  # no DL 2019 / 2020 passage
    again = LengthTeacher(128)
    same = pseudo_query_groups(["dl21"], **kw, teacher=again, teacher_cache=path, progress=False)
    assert again.pairs == 0 and [g.docs for g in same] == [g.docs for g in groups]
    with pytest.raises(BadInput, match="--pseudo-queries -1: expected a whole number >= 0"):
        pseudo_query_groups(["dl21"], **{**kw, "passages": -1}, teacher=again, progress=False)
