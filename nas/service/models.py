"""Request and response bodies of the service (pydantic), as published in its OpenAPI spec."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Name = Field(min_length=1, max_length=128)
StudyName = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
WorkloadText = Field(
    default="prefill:b1:s128", min_length=1, max_length=64, pattern=r"^(prefill|decode):b\d{1,4}:[sc]\d{1,7}$",
    description="prefill:bB:sS (prompt of S tokens) or decode:bB:cC (one token after a KV cache of C)",
)
FactoryArg = str | int | float | bool | None
Calibrated = Field(description="True when the latency was predicted with the searching machine's calibration (anyshape calibrate)")
CalibrationId = Field(description="The ID of that calibration (None when not calibrated)")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(BaseModel):
    detail: Any = Field(description="What is wrong with the request (a message, or pydantic's list of field errors)")


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    read_only: bool = Field(description="True when the service was started without a token: every write is refused")
    auth_reads: bool = Field(description="True when reads need the token too")
    workers: int = Field(description="Worker processes running queued searches")
    runs_db: str


class TableOut(BaseModel):
    runtime: str
    name: str
    source: str = Field(description="measured | roofline-estimate (unknown when meta.json lacks it)")
    rows: int | None
    date: str | None
    model: str | None
    status: str = Field(description="ok, or why the table cannot be used as is")


class DeviceOut(BaseModel):
    device: str
    known: bool = Field(description="A device anyshape has a spec for (this CPU or a listed GPU)")
    tables: list[TableOut]


class ParetoPointOut(BaseModel):
    trial: int
    accuracy: float
    latency_ms: float = Field(description="Predicted latency for the study's device, runtime and workload")
    memory_mb: float | None
    shape: dict[str, Any]
    latency_source: str
    latency_calibrated: bool = Calibrated
    latency_calibration_id: str | None = CalibrationId
    config_url: str


class StudyOut(BaseModel):
    name: str
    storage: str
    device: str | None
    runtime: str | None
    workload: str | None
    accuracy_metric: str
    accuracy_direction: str
    latency_source: str | None
    latency_calibrated: bool = Calibrated
    latency_calibration_id: str | None = CalibrationId
    base_model: str | None
    complete_trials: int
    pareto_size: int


class StudyDetailOut(StudyOut):
    pareto: list[ParetoPointOut]


class RecommendIn(Strict):
    device: str = Name
    runtime: str = Name
    workload: str = WorkloadText
    latency_budget_ms: float = Field(gt=0, le=1e9, allow_inf_nan=False)
    min_accuracy: float | None = Field(
        default=None, allow_inf_nan=False,
        description="At least this good in the study's metric direction (>= for maximised metrics, <= for minimised ones)",
    )
    study: str | None = Field(default=None, min_length=1, max_length=128, description="Only this study")
    base_model: str | None = Field(default=None, min_length=1, max_length=512, description="Only studies of this base model")


class AccuracyOut(BaseModel):
    metric: str
    value: float
    direction: str


class ClosestOut(BaseModel):
    study: str
    trial: int
    predicted_latency_ms: float
    accuracy: float


class RecommendOut(BaseModel):
    found: bool
    reason: str = Field(description="Why this config, or why none fits")
    device: str
    runtime: str
    workload: str
    latency_budget_ms: float
    candidates: int = Field(description="Pareto configs searched for this device, runtime and workload")
    study: str | None = None
    trial: int | None = None
    accuracy: AccuracyOut | None = None
    predicted_latency_ms: float | None = None
    latency_source: str | None = Field(default=None, description="Source of the latency table behind the prediction")
    latency_calibrated: bool = Field(
        default=False, description="True when the predicted latency used the searching machine's calibration (false when none was found)",
    )
    latency_calibration_id: str | None = Field(default=None, description="The ID of that calibration")
    memory_mb: float | None = None
    shape: dict[str, Any] | None = None
    reasons: list[str] = Field(default_factory=list)
    config: dict[str, Any] | None = Field(default=None, description="The anyshape/subnet-v1 config, ready for anyshape extract")
    config_url: str | None = None
    closest: ClosestOut | None = Field(default=None, description="When nothing fits: the fastest candidate, to size the budget")


class RunIn(Strict):
    study: str = StudyName
    trials: int = Field(ge=1, description="Complete trials the study should hold (at most the service's max_trials)")
    factory: str = Field(default="nas.search.factory:supernet_problem", min_length=3, max_length=200,
                         description="One of the search factories the service allows")
    factory_args: dict[str, FactoryArg] = Field(default_factory=dict, max_length=32)
    device: str = Name
    runtime: str = Name
    workload: str = WorkloadText
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    sampler: Literal["nsga2", "tpe"] = "nsga2"
    population_size: int = Field(default=16, ge=2, le=10_000)
    latency_budget_ms: float | None = Field(default=None, gt=0, le=1e9, allow_inf_nan=False)
    memory_budget_mb: float | None = Field(default=None, gt=0, le=1e12, allow_inf_nan=False)
    memory_objective: bool = False
    calibrated: bool = Field(default=True, description="Predict latency with this machine's calibration (anyshape calibrate) "
                             "where one applies; false: the table's predictions as they are")
    workers: int = Field(default=1, ge=1, description="Search processes this run uses (at most the service's max_run_workers)")

    @field_validator("factory_args")
    @classmethod
    def _calibrated_is_its_own_field(cls, value: dict[str, FactoryArg]) -> dict[str, FactoryArg]:
        if "calibrated" in value:
            raise ValueError("pass calibrated as the request's own field, not in factory_args")
        return value


class RunOut(BaseModel):
    id: str
    study: str
    status: Literal["queued", "running", "done", "failed"]
    trials: int
    complete_trials: int | None = Field(description="Complete trials in the study now (progress)")
    progress: float | None = Field(description="complete_trials / trials, capped at 1")
    attempts: int
    error: str | None = Field(description="Why it failed, or why it was re-queued")
    created_at: float
    started_at: float | None
    finished_at: float | None
    heartbeat_at: float | None
    worker_pid: int | None
    config: dict[str, Any]
    result: dict[str, Any] | None
    url: str
    results_url: str


class RunResultsOut(BaseModel):
    run: RunOut
    study: StudyDetailOut
