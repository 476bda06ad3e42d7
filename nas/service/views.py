"""What the endpoints answer, as plain functions of the catalog: study summaries, a Pareto trial's
subnet config, and the recommendation (a pure function of the studies and the request).
"""

from __future__ import annotations

from typing import Any

from nas.errors import AnyshapeError
from nas.service.catalog import ParetoPoint, StudyEntry
from nas.service.models import (
    AccuracyOut,
    ClosestOut,
    ParetoPointOut,
    RecommendIn,
    RecommendOut,
    StudyDetailOut,
    StudyOut,
)


def study_out(s: StudyEntry) -> StudyOut:
    return StudyOut(
        name=s.name, storage=s.storage, device=s.device, runtime=s.runtime, workload=s.workload,
        accuracy_metric=s.accuracy_metric, accuracy_direction=s.accuracy_direction, latency_source=s.latency_source,
        latency_calibrated=s.latency_calibrated, latency_calibration_id=s.latency_calibration_id,
        base_model=s.base_model, complete_trials=s.complete_trials, pareto_size=len(s.pareto),
    )


def study_detail(s: StudyEntry) -> StudyDetailOut:
    points = [
        ParetoPointOut(trial=p.trial, accuracy=p.accuracy, latency_ms=p.latency_ms, memory_mb=p.memory_mb, shape=p.shape,
                       latency_source=p.latency_source, latency_calibrated=s.latency_calibrated,
                       latency_calibration_id=s.latency_calibration_id, config_url=f"/studies/{s.name}/configs/{p.trial}")
        for p in s.pareto
    ]
    return StudyDetailOut(**study_out(s).model_dump(), pareto=points)


def subnet(entry: StudyEntry, trial: int) -> Any:
    """The subnet config of a Pareto trial of ``entry`` (built as ``anyshape export`` builds it)."""
    from types import SimpleNamespace

    from fastapi import HTTPException

    from nas.search.export import subnet_config

    point = next((p for p in entry.pareto if p.trial == trial), None)
    if point is None:
        front = ", ".join(str(p.trial) for p in entry.pareto) or "none"
        raise HTTPException(404, f"trial {trial} is not on the feasible Pareto front of study {entry.name!r}; its Pareto trials: {front}")
    fake_trial = SimpleNamespace(
        number=point.trial, values=[point.accuracy, point.latency_ms],
        user_attrs={"shape": point.shape, "predicted_latency_ms": point.latency_ms, "latency_source": point.latency_source,
                    "memory_mb": point.memory_mb},
    )
    return subnet_config(entry.attrs, fake_trial, entry.accuracy_metric)


def recommend(studies: tuple[StudyEntry, ...], body: RecommendIn) -> RecommendOut:
    """The best Pareto config over ``studies`` for the request: a pure function of its arguments."""
    from nas.workload import Workload

    workload = Workload.parse(body.workload).name
    head: dict[str, Any] = dict(device=body.device, runtime=body.runtime, workload=workload, latency_budget_ms=body.latency_budget_ms)
    matching = [
        s for s in studies
        if s.device == body.device and s.runtime == body.runtime and s.workload == workload
        and (body.study is None or s.name == body.study) and (body.base_model is None or s.base_model == body.base_model)
    ]
    candidates = [(s, p) for s in matching for p in s.pareto]
    if not candidates:
        have = sorted({f"{s.device}/{s.runtime}/{s.workload}" for s in studies if s.pareto})
        return RecommendOut(found=False, candidates=0, **head,
                            reason=f"no searched study has Pareto configs for {body.device}/{body.runtime}/{workload}"
                                   + (f" (study={body.study})" if body.study else "")
                                   + (f" (base_model={body.base_model})" if body.base_model else "")
                                   + f"; searched: {', '.join(have) or 'none'}. Submit a search run for it (POST /runs)")
    metrics = sorted({(s.accuracy_metric, s.accuracy_direction) for s in matching if s.pareto})
    if len(metrics) > 1:
        names = ", ".join(f"{s.name} ({s.accuracy_metric})" for s in matching if s.pareto)
        raise AnyshapeError(f"studies with different accuracy metrics match: {names}; pass study or base_model to choose")
    fits = [(s, p) for s, p in candidates if p.latency_ms <= body.latency_budget_ms]
    good = [(s, p) for s, p in fits if body.min_accuracy is None or s.meets(p.accuracy, body.min_accuracy)]
    if not good:
        fastest = min(candidates, key=lambda c: (c[1].latency_ms, c[0].name, c[1].trial))
        closest = ClosestOut(study=fastest[0].name, trial=fastest[1].trial, predicted_latency_ms=fastest[1].latency_ms,
                             accuracy=fastest[1].accuracy)
        if not fits:
            reason = (f"no config's predicted latency fits {body.latency_budget_ms:g} ms; the fastest of {len(candidates)} "
                      f"is {fastest[1].latency_ms:.4g} ms (study {fastest[0].name}, trial {fastest[1].trial})")
        else:
            metric = matching[0].accuracy_metric
            best = max(fits, key=lambda c: c[1].accuracy if c[0].accuracy_direction != "minimize" else -c[1].accuracy)
            reason = (f"{len(fits)} configs fit {body.latency_budget_ms:g} ms but none reaches {metric} {body.min_accuracy:g}; "
                      f"the best that fits has {best[1].accuracy:.4g} (study {best[0].name}, trial {best[1].trial})")
        return RecommendOut(found=False, candidates=len(candidates), reason=reason, closest=closest, **head)
    study, point = good[0]
    for s, p in good[1:]:  # most accurate; then fastest; then study name and trial, so the answer is deterministic
        if s.better(p.accuracy, point.accuracy) or (
            p.accuracy == point.accuracy and (p.latency_ms, s.name, p.trial) < (point.latency_ms, study.name, point.trial)
        ):
            study, point = s, p
    reasons = [
        f"predicted latency {point.latency_ms:.4g} ms <= budget {body.latency_budget_ms:g} ms "
        f"for {body.device}/{body.runtime}/{workload}",
        f"latency table source: {point.latency_source}" + _calibration_note(study, point),
        f"most accurate of {len(good)} Pareto configs within the budget ({len(candidates)} searched): "
        f"{study.accuracy_metric} {point.accuracy:.6g} ({study.accuracy_direction})",
    ]
    if body.min_accuracy is not None:
        reasons.append(f"meets the minimum {study.accuracy_metric} {body.min_accuracy:g}")
    return RecommendOut(
        found=True, reason=reasons[-1 if body.min_accuracy is None else -2], candidates=len(candidates), **head,
        study=study.name, trial=point.trial,
        accuracy=AccuracyOut(metric=study.accuracy_metric, value=point.accuracy, direction=study.accuracy_direction),
        predicted_latency_ms=point.latency_ms, latency_source=point.latency_source,
        latency_calibrated=study.latency_calibrated, latency_calibration_id=study.latency_calibration_id, memory_mb=point.memory_mb,
        shape=point.shape, reasons=reasons, config=subnet(study, point.trial).to_dict(),
        config_url=f"/studies/{study.name}/configs/{point.trial}",
    )


def _calibration_note(study: StudyEntry, point: ParetoPoint) -> str:
    """What the recommend reasons add after the table's source: the calibration, or that an estimate is only one."""
    if study.latency_calibrated:
        which = f" (calibration {study.latency_calibration_id})" if study.latency_calibration_id else ""
        return f", calibrated on the searching machine{which}"
    if point.latency_source != "measured":
        return " (an estimate from published specs, not a measurement: verify on the device)"
    return ""
