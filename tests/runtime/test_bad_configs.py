"""Tampered or wrong configs: one clear error naming the field; nothing from the file runs."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from autotune.export import schema
from autotune.runtime import ConfigError, parse_config
from tests.conftest import TINY
from tests.runtime.helpers import F32_GEMM, choices, make_config

GOOD = make_config(TINY, choices(F32_GEMM, "float32"), [(4, 16)])


def _set(path: str, value: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(GOOD)
    *parents, last = path.split("/")
    node: Any = cfg
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[int(last) if isinstance(node, list) else last] = value
    return cfg


_DELETE = object()

CASES = [
    ("ops/ffn_up/0/variant", "os.system", "variant"),
    ("ops/ffn_up/0/variant", "no_such_variant", "unknown variant"),
    ("ops/ffn_up/0/params/row_block", 3, "row_block"),
    ("ops/ffn_up/0/params/threads", "2", "threads"),
    ("ops/ffn_up/0/params/threads", 10**9, "threads"),
    ("ops/ffn_up/0/params/impl", "torch.load", "impl"),
    ("ops/ffn_up/0/params/extra", 1, "extra"),
    ("ops/ffn_up/0/latency_ms", 1e300, "latency_ms"),
    ("ops/ffn_up/0/bucket/batch", 0, "bucket.batch"),
    ("ops/ffn_up/0/bucket", _DELETE, "bucket"),
    ("ops/softmax", [], "softmax"),
    ("model/architecture/hidden_size", "32", "hidden_size"),
    ("model/architecture_hash", "0" * 12, "architecture_hash"),
    ("tolerance", _DELETE, "tolerance"),
    ("device", "tpu", "device"),
    ("surprise", {"__reduce__": "os.system"}, "surprise"),
    ("layout/pad_to_multiple", -1, "pad_to_multiple"),
]


@pytest.mark.parametrize(("path", "value", "field"), CASES,
                         ids=[f"{p}={v!r}"[:40] for p, v, _ in CASES])
def test_tampered_config_names_the_field(path: str, value: Any, field: str) -> None:
    cfg = _set(path, value)
    with pytest.raises(ConfigError) as e:
        parse_config(cfg)
    assert field in str(e.value)
    # the package's JSON Schema, checked by the reference implementation, agrees wherever
    # the problem is structural (registry and space checks come on top of it)
    if field not in ("unknown variant", "row_block", "impl", "extra", "threads",
                     "architecture_hash"):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(cfg, schema())


def test_good_config_passes_both_validators() -> None:
    jsonschema.validate(GOOD, schema())
    assert parse_config(GOOD).ops["ffn_up"][0].params["impl"] == "onednn_packed"


def test_wrong_schema_version() -> None:
    with pytest.raises(ConfigError, match="schema: version 2 is not supported"):
        parse_config(_set("schema", 2))


def test_nan_and_non_json_files(tmp_path: Path) -> None:
    text = json.dumps(GOOD).replace('"latency_ms": 1.0', '"latency_ms": NaN', 1)
    (tmp_path / "nan.json").write_text(text)
    with pytest.raises(ConfigError, match="non-finite number NaN"):
        parse_config(tmp_path / "nan.json")
    (tmp_path / "pickle.json").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_config(tmp_path / "pickle.json")
    with pytest.raises(ConfigError, match="cannot read"):
        parse_config(tmp_path / "missing.json")


def test_loading_never_imports_names_from_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins
    import importlib

    seen: list[str] = []
    real_import, real_import_module = builtins.__import__, importlib.import_module
    monkeypatch.setattr(builtins, "__import__",
                        lambda name, *a, **k: (seen.append(name), real_import(name, *a, **k))[1])
    monkeypatch.setattr(importlib, "import_module",
                        lambda name, *a: (seen.append(name), real_import_module(name, *a))[1])
    cfg = _set("ops/ffn_up/0/variant", "subprocess")
    with pytest.raises(ConfigError):
        parse_config(cfg)
    assert "subprocess" not in seen and "os.system" not in seen


def test_the_schema_names_every_op_kind_and_family() -> None:
    """The published schema is a file; its enums must follow the registries."""
    from autotune.models.bert import FAMILIES
    from autotune.models.kinds import OP_KINDS

    props = schema()["properties"]
    assert props["ops"]["propertyNames"]["enum"] == list(OP_KINDS)
    arch = props["model"]["properties"]["architecture"]["properties"]
    assert arch["family"]["enum"] == [f for f in FAMILIES if f != "bert"]
