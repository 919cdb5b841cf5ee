"""Note [Codec vocabulary]: Python names the compression methods and parses
specs through the one C++ list and parser (csrc/compression/method.h) that
the group switch, the ops and the parameter server use."""

from __future__ import annotations

import pytest

import torch_distx
from torch_distx import _C
from torch_distx.ps import parse_compression


def test_methods_and_wire_values() -> None:
    assert _C.compression_methods() == {"none": 0, "fp16": 1, "bf16": 2, "topk": 3}


@pytest.mark.parametrize("spec,want", [(None, (0, 0.01)), ("none", (0, 0.01)), ("fp16", (1, 0.01)),
                                       ("bf16", (2, 0.01)), ("topk:0.05", (3, 0.05)), ("topk:1", (3, 1.0))])
def test_ps_parses_like_the_switch(spec, want) -> None:
    assert parse_compression(spec) == want


@pytest.mark.parametrize("spec,message", [
    ("topk:0", "ps: compression: the top-k ratio must be a number in (0, 1]; got 'topk:0'"),
    ("topk:x", "ps: compression: the top-k ratio must be a number in (0, 1]"),
    ("int8", "ps: compression must be one of fp16, bf16, topk:<ratio> or none; got 'int8'"),
    ("off", "ps: compression must be one of"),
])
def test_bad_specs_name_their_source(spec, message) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        parse_compression(spec)
    with pytest.raises(ValueError, match="SRC"):
        _C.parse_compression(spec, "SRC")


def test_ps_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="ps: compression must be None"):
        parse_compression(0.5)  # type: ignore[arg-type]
    assert torch_distx.Options(compress="topk:0.5").compress == "topk:0.5"
