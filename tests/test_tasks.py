"""Task metrics (labelled pairs, labelled texts) and the search's ``--metric``."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from nas.cli import main
from nas.errors import AnyshapeError
from nas.hub import load_config_dict
from nas.modeling import load_model
from nas.supernet.calibration import load_tokenizer
from nas.supernet.tasks import LabelsTask, PairsTask, TaskEvaluator, load_task
from profilers.environment import cpu_slug

WORDS = ["the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "as", "with", "was", "on", "be", "by", "this", "are", "or", "from", "at", "an", "which", "not"]


def write_pairs(path, n=24, seed=0):
    rng = random.Random(seed)
    lines = ["# text1<TAB>text2<TAB>score"]
    for _ in range(n):
        a = " ".join(rng.sample(WORDS, 4))
        b = " ".join(rng.sample(WORDS, 4))
        lines.append(f"{a}\t{b}\t{rng.uniform(0, 5):.2f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_labels(path, n=24, seed=0):
    rng = random.Random(seed)
    lines = [f"{'pos' if i % 2 else 'neg'}\t{' '.join(rng.sample(WORDS, 5))}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_pairs_score_is_the_spearman_of_cosines():
    pairs = [(f"a{i}", f"b{i}", float(i)) for i in range(12)]
    task = PairsTask("pairs:t", pairs)
    # b_i at angle proportional to -i from a_i: cosine falls as the judged score rises -> rho = -1
    emb = {}
    for i in range(12):
        emb[f"a{i}"] = np.array([1.0, 0.0])
        emb[f"b{i}"] = np.array([np.cos(0.1 * i), np.sin(0.1 * i)])
    x = np.stack([emb[t] for t in task.texts])
    assert task.score(x) == pytest.approx(-1.0)
    flipped = PairsTask("pairs:t", [(a, b, -s) for a, b, s in pairs])
    assert flipped.score(x) == pytest.approx(1.0)


def test_labels_probe_separates_separable_embeddings_and_not_noise():
    rng = np.random.default_rng(0)
    examples = [("pos" if i % 2 else "neg", f"text {i}") for i in range(40)]
    task = LabelsTask("labels:t", examples)
    signs = np.array([1.0 if label == "pos" else -1.0 for label, _ in examples])
    separable = np.stack([signs, rng.normal(size=40)], axis=1) + 0.01 * rng.normal(size=(40, 2))
    assert task.score(separable) == 1.0
    noise = rng.normal(size=(40, 8))
    assert task.score(noise) < 0.85


@pytest.mark.parametrize(
    ("kind", "content", "needle"),
    [
        ("pairs", "a\tb\n" * 12, "expected text1<TAB>text2<TAB>score"),
        ("pairs", "a\tb\tmany\n" * 12, "is not a number"),
        ("pairs", "a\tb\t1\n" * 12, "the same score"),
        ("pairs", "a\tb\t1\nc\td\t2\n", "at least 10"),
        ("labels", "pos\ta\n" * 12, "at least 2 labels"),
        ("labels", "pos\ta\tb\n" * 12, "expected label<TAB>text"),
    ],
)
def test_bad_task_files_are_one_line_errors(tmp_path, kind, content, needle):
    path = tmp_path / "task.tsv"
    path.write_text(content)
    with pytest.raises(AnyshapeError, match=needle) as err:
        load_task(f"{kind}:{path}")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("spec", ["pairs", "nope:file", "pairs:"])
def test_bad_task_specs(spec):
    with pytest.raises(AnyshapeError, match="give pairs:FILE"):
        load_task(spec)


def test_missing_task_file(tmp_path):
    with pytest.raises(AnyshapeError, match="does not exist"):
        load_task(f"labels:{tmp_path / 'none.tsv'}")


@pytest.fixture(scope="module")
def encoder_setup(tok_model, tmp_path_factory, search_setup):
    root = tmp_path_factory.mktemp("tasks")
    model = tok_model("bert")
    search_setup(model, root, "tiny-bert", 32)
    write_pairs(root / "pairs.tsv")
    write_labels(root / "labels.tsv")
    return root, model


def test_task_evaluator_scores_shapes_of_a_real_encoder(encoder_setup):
    root, model = encoder_setup
    net, family = load_model_dir(model)
    space = family.space(load_config_dict(model))
    for spec in (f"pairs:{root / 'pairs.tsv'}", f"labels:{root / 'labels.tsv'}"):
        evaluator = TaskEvaluator(net, family, space, load_tokenizer(model), load_task(spec), seq_len=16, batch_size=5)
        base = evaluator.base_score()
        assert -1.0 <= base <= 1.0
        assert evaluator.base_score() == base  # deterministic
        assert evaluator.score((0,)) != base  # one layer of four is another model


def load_model_dir(path):
    from nas.hub import resolve_model

    return load_model(resolve_model(str(path)))


def search(capsys, root, study, *extra):
    code = main([str(a) for a in ["search", root / "sn", "--device", cpu_slug(), "--runtime", "fake", "--tables", root / "tables",
                                  "--table", "tiny-bert", "--storage", f"sqlite:///{root / 'study.db'}", "--trials", 6,
                                  "--workload", "prefill:b1:s32", "--study", study, "--json", *extra]])  # fmt: skip
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("kind", ["pairs", "labels"])
def test_search_takes_a_task_metric(capsys, encoder_setup, kind):
    import optuna

    root, _ = encoder_setup
    code, out, err = search(capsys, root, f"task-{kind}", "--metric", f"{kind}:{root / f'{kind}.tsv'}")
    assert code == 0, err
    assert json.loads(out)["complete_trials"] == 6
    study = optuna.load_study(study_name=f"task-{kind}", storage=f"sqlite:///{root / 'study.db'}")
    metric = "spearman" if kind == "pairs" else "probe_accuracy"
    assert study.user_attrs["accuracy_metric"] == metric and study.user_attrs["accuracy_direction"] == "maximize"
    record = study.user_attrs["accuracy_task"]
    assert record["rows"] == 24 and len(record["sha256"]) == 64 and -1.0 <= record["base_score"] <= 1.0
    assert all(-1.0 <= t.values[0] <= 1.0 for t in study.trials)


def test_a_study_refuses_a_changed_task_file(capsys, encoder_setup, tmp_path):
    root, _ = encoder_setup
    pairs = write_pairs(tmp_path / "pairs.tsv")
    code, _, err = search(capsys, root, "changed", "--metric", f"pairs:{pairs}")
    assert code == 0, err
    write_pairs(pairs, seed=1)
    code, _, err = search(capsys, root, "changed", "--metric", f"pairs:{pairs}", "--trials", 8)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "different factory_args" in err, err


@pytest.mark.parametrize(("metric", "needle"), [("perplexity", "not a metric of encoders"), ("labels:nofile.tsv", "does not exist")])
def test_bad_metrics_are_one_line_errors(capsys, encoder_setup, metric, needle):
    root, _ = encoder_setup
    code, _, err = search(capsys, root, f"bad-{metric[:5]}", "--metric", metric)
    assert code == 1 and len(err.strip().splitlines()) == 1 and needle in err and "Traceback" not in err, err


def test_judged_sets_are_read_from_the_wheel_once(gensim_wheel, tmp_path):
    from nas.supernet.judged import judged_sets

    specs = judged_sets(fetch=False)
    assert set(specs) == {"simlex-999", "wordsim-353", "polarity-200"}
    simlex, polarity = load_task(specs["simlex-999"]), load_task(specs["polarity-200"])
    assert isinstance(simlex, PairsTask) and simlex.pairs[3] == ("w3", "v3", 1.5)
    assert isinstance(polarity, LabelsTask) and polarity.examples[1] == ("pos", "sentence 1 café .")
    gensim_wheel.unlink()
    assert judged_sets(fetch=False) == specs  # converted files are reused: the wheel is not needed again


def test_judged_sets_without_the_wheel_say_how_to_get_it(monkeypatch):
    import importlib.util

    from nas.supernet.judged import judged_sets

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(AnyshapeError, match=r"pip download --no-deps gensim==4.3.3"):
        judged_sets(fetch=False)
