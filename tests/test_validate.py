"""One validation toolkit: every config loader and the request parameters report the same mistake
in the same words, `<key>: <why>`, and the toolkit's rules hold on hand-made values."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from runtime.core import validate
from runtime.core.errors import ConfigError, RequestValidationError
from runtime.core.params import RequestParams
from runtime.core.types import PrmKind

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, source: str, edit: dict) -> Path:
    data = yaml.safe_load((ROOT / source).read_text())
    section = data
    *parents, last = list(edit["at"])
    for key in parents:
        section = section[key]
    section[last] = edit["value"]
    out = tmp_path / "edited.yaml"
    out.write_text(yaml.safe_dump(data))
    return out


def _load(kind: str, path: Path) -> object:
    if kind == "pipeline":
        from runtime.config import load_config
        return load_config(path)
    if kind == "serve":
        from runtime.deploy.config import load_serve_config
        return load_serve_config(path)
    from build_engines.yaml_config import load_config as load_engines
    return load_engines(path)


CASES = [  # (loader, file, path to the edited key, value, expected message)
    ("pipeline", "configs/default.yaml", ("engine", "max_batch_rowz"), 4,
     "engine.max_batch_rowz: unknown key; expected one of kv_cache_mb, lean_forward, max_batch_rows, torch_threads"),
    ("pipeline", "configs/default.yaml", ("engine", "lean_forward"), "yes",
     "engine.lean_forward: must be true or false, got 'yes'"),
    ("pipeline", "configs/default.yaml", ("engine", "max_batch_rows"), 0, "engine.max_batch_rows: must be >= 1, got 0"),
    ("serve", "configs/triton/torch_cpu.yaml", ("ports", "grcp"), 1, "ports.grcp: unknown key; expected one of"),
    ("serve", "configs/triton/torch_cpu.yaml", ("max_batch_size",), 0, "max_batch_size: must be >= 1, got 0"),
    ("serve", "configs/triton/torch_cpu.yaml", ("shutdown_grace_s",), "soon", "shutdown_grace_s: must be a number"),
    ("serve", "configs/triton/torch_cpu.yaml", ("admission", "max_queue_sise"), 1,
     "admission.max_queue_sise: unknown key; expected one of"),
    ("serve", "configs/triton/torch_cpu.yaml", ("admission", "max_running_rows"), 65,
     "admission.max_running_rows: 65 rows would need more sessions than the 64 each sub-model keeps"),
    ("serve", "configs/triton/torch_cpu.yaml", ("instances", "target"), 2, "instances.target: one torch sub-model"),
    ("serve", "configs/triton/torch_cpu.yaml", ("max_queue_delay_us",), 100,
     "max_queue_delay_us: only 0 with backend torch"),
    ("pipeline", "configs/default.yaml", ("engine", "kv_cache_mb"), -1, "engine.kv_cache_mb: must be >= 0, got -1"),
    ("serve", "configs/triton/trtllm.yaml", ("trtllm", "engines", "draft", "enable_kv_cache_reuse"), "yes",
     "trtllm.engines.draft.enable_kv_cache_reuse: must be true or false, got 'yes'"),
    ("serve", "configs/triton/trtllm.yaml", ("trtllm", "polcy"), 1, "trtllm.polcy: unknown key; expected one of"),
    ("engines", "configs/engines/embedded.yaml", ("calibration", "sise"), 1, "calibration.sise: unknown key; expected one of"),
    ("engines", "configs/engines/embedded.yaml", ("calibration", "size"), 0, "calibration.size: must be >= 1, got 0"),
    ("engines", "configs/engines/embedded.yaml", ("engines", "draft", "dtype"), "fp13",
     "engines.draft.dtype: unknown value 'fp13'; expected one of"),
]


@pytest.mark.parametrize("kind,source,at,value,message", CASES, ids=[f"{c[0]}-{'.'.join(c[2])}" for c in CASES])
def test_every_config_reports_the_same_way(tmp_path: Path, kind: str, source: str, at: tuple[str, ...],
                                           value: object, message: str) -> None:
    path = _write(tmp_path, source, {"at": at, "value": value})
    with pytest.raises(ConfigError) as err:
        _load(kind, path)
    assert str(err.value).startswith(message), str(err.value)


def test_request_params_use_the_same_words() -> None:
    with pytest.raises(RequestValidationError, match=r"^max_tokens: must be >= 1, got 0$"):
        RequestParams.from_mapping({"max_tokens": 0})
    with pytest.raises(RequestValidationError, match=r"^stop_at_boxed: must be true or false, got 'yes'$"):
        RequestParams.from_mapping({"stop_at_boxed": "yes"})
    with pytest.raises(RequestValidationError, match=r"^method: unknown value 'rds'; expected one of rsd"):
        RequestParams.from_mapping({"method": "rds"})


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^config: config file .* does not exist"):
        validate.load_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match=r"^config: .* is not valid YAML"):
        validate.load_yaml(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n")
    with pytest.raises(ConfigError, match=r"^config: expected a mapping, got list"):
        validate.load_yaml(listing)
    (tmp_path / "empty.yaml").write_text("")
    assert validate.load_yaml(tmp_path / "empty.yaml") == {}


def test_ranges_and_types() -> None:
    assert validate.integer("k", 3, lo=3, hi=3) == 3
    for bad in (True, 2.0, "2", None):
        with pytest.raises(ConfigError, match="k: must be an integer"):
            validate.integer("k", bad)
    with pytest.raises(ConfigError, match=r"k: must be > 0.0, got 0"):
        validate.number("k", 0, lo=0.0, lo_open=True)
    with pytest.raises(ConfigError, match="k: must not be NaN"):
        validate.number("k", math.nan)
    with pytest.raises(ConfigError, match="k: must be finite"):
        validate.number("k", math.inf)
    assert validate.number("k", math.inf, allow_inf=True) == math.inf
    with pytest.raises(ConfigError, match=r"k: must be <= 1, got 2"):
        validate.number("k", 2, hi=1)


def test_coercion_keeps_meaning() -> None:
    assert validate.coerce("k", np.int32(3), int) == 3
    assert validate.coerce("k", 4.0, int) == 4
    assert validate.coerce("k", b"0.5", float) == 0.5
    assert validate.coerce("k", "true", bool) is True
    assert validate.coerce("k", np.bool_(False), bool) is False
    for value, kind in ((1.5, int), ("yes", bool), (2, bool), ("x", float), (True, int), (True, float), (3, str)):
        with pytest.raises(ConfigError, match="^k: must be"):
            validate.coerce("k", value, kind)


def test_known_keys_and_required() -> None:
    assert validate.known_keys("a.b", {"x": 1}, {"x", "y"}) == {"x": 1}
    with pytest.raises(ConfigError, match=r"^a.b.z: unknown key; expected one of x, y$"):
        validate.known_keys("a.b", {"z": 1}, {"x", "y"})
    with pytest.raises(ConfigError, match=r"^z: unknown key"):
        validate.known_keys("", {"z": 1}, {"x"})
    with pytest.raises(ConfigError, match=r"^a.x: required$"):
        validate.get("a", {}, "x", validate.integer)
    assert validate.get("a", {}, "x", validate.integer, 5, lo=1) == 5
    with pytest.raises(ConfigError, match=r"^a.x: must be >= 6, got 5$"):
        validate.get("a", {"x": 5}, "x", validate.integer, lo=6)


def test_one_prm_format_type_everywhere() -> None:
    from build_engines.config import HeadLayout, PrmSpec
    from runtime.config import PRM_FORMATS
    from runtime.engines.prm_format import PRM_FORMATS as HEAD_FORMATS

    assert PRM_FORMATS == ("value_head", "two_class", "likelihood", "confidence")
    assert HEAD_FORMATS == tuple(k.value for k in PrmKind if k.has_head) == ("value_head", "two_class")
    with pytest.raises(ConfigError, match="prm.format: a likelihood PRM has no head"):
        PrmSpec(format=PrmKind.LIKELIHOOD, head_layout=HeadLayout.SCORE_HEAD, num_labels=1, separator="\n\n")
    with pytest.raises(ConfigError, match="prm.format: a confidence PRM has no head to build: it reads the draft"):
        PrmSpec(format=PrmKind.CONFIDENCE, head_layout=HeadLayout.SCORE_HEAD, num_labels=1, separator="\n\n")


def test_devices() -> None:
    from runtime.config import ModelConfig

    for good in ("cpu", "cuda", "auto", "cuda:0", "cuda:12"):
        assert ModelConfig(Path("m"), device=good).device == good
    for bad in ("cuda:N", "cuda:", "cuda:x", "gpu"):
        with pytest.raises(ConfigError, match=r"^device: unknown value .* or cuda:N$"):
            ModelConfig(Path("m"), device=bad)
