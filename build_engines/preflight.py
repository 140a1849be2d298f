"""Checks that run before any step: model folders, tokenizers, draft/target tokenizer identity,
the PRM separator token, and the vocab_row size limit. A real build stops on the first failure;
a dry run reports the failures next to the plan.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from build_engines.config import MAX_VOCAB_ROW_VOCAB, EngineSpec, HeadLayout, Role
from build_engines.errors import BuildError, ConfigError, TokenizerError
from build_engines.models import (
    ModelInfo,
    check_same_tokenizer,
    inspect_model,
    separator_token_id,
    tokenizer_fingerprint,
)
from build_engines.plan import BuildPlan


@dataclass(frozen=True, slots=True)
class Preflight:
    """Facts gathered about the source models."""

    models: dict[Role, ModelInfo] = field(default_factory=dict)
    separator_token_id: int | None = None


def resolve_separator(spec: EngineSpec) -> int:
    """The PRM separator id from the PRM's own tokenizer, cross-checked with the config if given."""
    assert spec.prm is not None
    found = separator_token_id(spec.model, spec.prm.separator)
    given = spec.prm.separator_token_id
    if found is not None and given is not None and found != given:
        raise ConfigError("engines.prm.prm.separator_token_id",
                          f"is {given} but the PRM tokenizer encodes {spec.prm.separator!r} as {found}")
    if found is not None:
        return found
    if given is not None:
        return given
    raise TokenizerError(f"prm: cannot find the token id of separator {spec.prm.separator!r} in "
                         f"{spec.model}; set engines.prm.prm.separator_token_id")


def _check_vocab_row(spec: EngineSpec, info: ModelInfo) -> None:
    if spec.prm is None or spec.prm.head_layout is not HeadLayout.VOCAB_ROW:
        return
    if info.vocab_size > MAX_VOCAB_ROW_VOCAB:
        raise ConfigError("engines.prm.prm.head_layout",
                          f"vocab_row writes a {info.vocab_size}-wide logit row per context token "
                          f"(limit {MAX_VOCAB_ROW_VOCAB}); use score_head for this model")


def _check_engine(spec: EngineSpec) -> tuple[ModelInfo, int | None]:
    key = f"engines.{spec.role.value}"
    info = inspect_model(spec.model, spec.family, key)
    tokenizer_fingerprint(spec.model, key)
    if spec.prm is None:
        return info, None
    _check_vocab_row(spec, info)
    return info, resolve_separator(spec)


def run_preflight(plan: BuildPlan) -> Preflight:
    """Raise the first problem found; return what was learned."""
    models: dict[Role, ModelInfo] = {}
    separator: int | None = None
    for engine in plan.engines:
        info, sep = _check_engine(engine.spec)
        models[engine.spec.role] = info
        separator = sep if engine.spec.prm is not None else separator
    if plan.config.check_tokenizers and Role.DRAFT in models and Role.TARGET in models:
        check_same_tokenizer(plan.config.draft.model, plan.config.target.model)
    return Preflight(models, separator)


def preflight_problems(plan: BuildPlan) -> tuple[Preflight, list[str]]:
    """For a dry run: everything that would stop a real build, per engine, without raising."""
    problems: list[str] = []
    models: dict[Role, ModelInfo] = {}
    separator: int | None = None
    for engine in plan.engines:
        try:
            info, sep = _check_engine(engine.spec)
        except (BuildError, ConfigError) as exc:
            problems.append(f"{engine.spec.role.value}: {type(exc).__name__}: {exc}")
            continue
        models[engine.spec.role] = info
        separator = sep if engine.spec.prm is not None else separator
    if plan.config.check_tokenizers and Role.DRAFT in models and Role.TARGET in models:
        try:
            check_same_tokenizer(plan.config.draft.model, plan.config.target.model)
        except BuildError as exc:
            problems.append(f"draft/target: {type(exc).__name__}: {exc}")
    return Preflight(models, separator), problems
