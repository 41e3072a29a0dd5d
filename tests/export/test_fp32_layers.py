"""The choice of an int8 model's fp32 layers: a class stays fp32 only when int8 is clearly
slower, and the accuracy search keeps as few layers as reach the gate."""

from __future__ import annotations

from resnext_deploy.export.fp32_layers import ClassSpeed, fewest_fp32_layers, slow_class_layers


def test_fewest_layers_search_finds_the_smallest_passing_count() -> None:
    calls = []

    def passes(layers: list[str]) -> tuple[bool, float]:
        calls.append(len(layers))
        return len(layers) >= 5, len(layers) / 10

    k, tried = fewest_fp32_layers([f"n{i}" for i in range(20)], passes, limit=10)
    assert k == 5 and tried[-1][0] in (5, 6, 7, 8) and len(calls) <= 6
    assert fewest_fp32_layers(["a", "b"], lambda layers: (False, 0.0), limit=2)[0] == -1
    assert fewest_fp32_layers(["a"], lambda layers: (True, 1.0), limit=1)[0] == 1


def test_a_class_stays_fp32_only_when_int8_is_clearly_slower() -> None:
    assert ClassSpeed("group=8 3x3", 3, fp32_ms=0.58, int8_ms=1.76).int8_slower
    assert not ClassSpeed("group=1 3x3", 1, fp32_ms=0.08, int8_ms=0.10).int8_slower  # noise
    assert not ClassSpeed("group=1 1x1", 36, fp32_ms=10.0, int8_ms=10.5).int8_slower  # within 10%
    assert not ClassSpeed("group=1 1x1", 36, fp32_ms=3506.8, int8_ms=1850.1).int8_slower


def test_only_the_convolutions_of_a_slower_class_stay_fp32() -> None:
    speeds = (
        ClassSpeed("group=8 3x3", 2, fp32_ms=0.58, int8_ms=1.76),
        ClassSpeed("group=1 1x1", 3, fp32_ms=1.0, int8_ms=0.5),
    )
    classes = {"conv_a": "group=8 3x3", "conv_b": "group=1 1x1", "conv_c": "group=8 3x3"}
    layers = slow_class_layers(speeds, classes, {"conv_a": "layer1.0.conv2"})
    assert list(layers) == ["conv_a", "conv_c"]
    assert layers["conv_a"].module == "layer1.0.conv2" and layers["conv_c"].module == "conv_c"
    assert layers["conv_a"].reason == (
        "speed: group=8 3x3 convolutions take 1.76 ms in int8 and 0.58 ms in fp32 here"
    )
