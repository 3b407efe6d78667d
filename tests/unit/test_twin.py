"""Twin domain: RFC 7396 merge patch, versions, $metadata, IoT Hub's limits, documents."""

from __future__ import annotations

import contextlib
import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.domain.devices import ConnectionState, DeviceStatus, etag_of
from hub.domain.json import JsonObject, JsonValue
from hub.domain.twin import (
    LIMITS,
    PropertySet,
    Section,
    Twin,
    TwinLimits,
    apply_desired_patch,
    apply_reported_patch,
    apply_tags_patch,
    desired_notification,
    device_twin_document,
    isoformat,
    json_size,
    merge_patch,
    replace_tags_and_desired,
    strip_system_keys,
    twin_document,
    validate_section,
)
from hub.errors import BadRequestError, TwinLimitError

T0 = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
T1 = T0 + timedelta(seconds=1)
T2 = T0 + timedelta(seconds=2)
ISO0 = "2024-01-02T03:04:05.6789010Z"
ISO1 = "2024-01-02T03:04:06.6789010Z"
ISO2 = "2024-01-02T03:04:07.6789010Z"

# Generation speed varies (a cold character cache alone takes a second): no timing checks.
RELAXED = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)

# -- strategies --------------------------------------------------------------------------

# Keys that pass IoT Hub's rules (no '.', '$', space, control characters).
valid_keys = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zs"), exclude_characters=".$"),
    min_size=1,
    max_size=8,
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=LIMITS.min_int, max_value=LIMITS.max_int)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(valid_keys, children, max_size=3),
    max_leaves=12,
)
json_objects = st.dictionaries(valid_keys, json_values, max_size=5)
# Stored documents never hold null at object level (merge patch deletes instead).
stored_values = st.recursive(
    scalars.filter(lambda v: v is not None),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(valid_keys, children, max_size=3),
    max_leaves=12,
)
stored_objects = st.dictionaries(valid_keys, stored_values, max_size=5)
# Keys from a small alphabet so that patches and targets overlap often.
small_keys = st.sampled_from(["a", "b", "c", "d"])
overlapping_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=2) | st.dictionaries(small_keys, children, max_size=3),
    max_leaves=10,
)
overlapping_objects = st.dictionaries(small_keys, overlapping_values, max_size=4)


def rfc7396(target: Any, patch: Any) -> Any:
    """The pseudo-code of RFC 7396 section 2, transcribed literally."""
    if isinstance(patch, dict):
        target = {} if not isinstance(target, dict) else copy.deepcopy(target)
        for name, value in patch.items():
            if value is None:
                target.pop(name, None)
            else:
                target[name] = rfc7396(target.get(name), value)
        return target
    return copy.deepcopy(patch)


def fresh_twin(device_id: str = "dev-1") -> Twin:
    return Twin(device_id)


def nested(depth: int, leaf: JsonValue = 1) -> JsonObject:
    """``{"l1": {"l2": ... {"l<depth>": leaf}}}``: ``depth`` levels of keys."""
    value: JsonValue = leaf
    for level in range(depth, 0, -1):
        value = {f"l{level}": value}
    assert isinstance(value, dict)
    return value


def sized(total: int) -> JsonObject:
    """An object whose IoT Hub size is exactly ``total`` bytes, with every string under 4 KB."""
    doc: JsonObject = {}
    remaining = total
    index = 0
    while remaining:
        key = f"k{index:03d}"  # 4 bytes
        room = remaining - len(key)
        assert room >= 0, "total too small to build"
        value = "x" * min(room, 4000)
        doc[key] = value
        remaining -= len(key) + len(value)
        index += 1
    assert json_size(doc) == total
    return doc


# -- merge patch -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        # RFC 7396 appendix A, the cases whose target and patch are objects.
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ({}, {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
        # More: nested merge keeps siblings, a non-object replaces an object and back.
        ({"a": {"x": 1, "y": 2}}, {"a": {"y": 3}}, {"a": {"x": 1, "y": 3}}),
        ({"a": {"x": 1}}, {"a": 5}, {"a": 5}),
        ({"a": 5}, {"a": {"x": None, "y": 1}}, {"a": {"y": 1}}),
        ({"a": {"x": 1}}, {"a": {}}, {"a": {"x": 1}}),
        ({"a": 1}, {"b": None}, {"a": 1}),
        ({"a": [1, 2]}, {"a": [None]}, {"a": [None]}),  # nulls inside arrays are values
        ({"a": {"b": {"c": {"d": 1}}}}, {"a": {"b": {"c": {"d": None, "e": 2}}}}, {"a": {"b": {"c": {"e": 2}}}}),
    ],
)
def test_merge_patch_rfc7396_examples(target: JsonObject, patch: JsonObject, expected: JsonObject) -> None:
    assert merge_patch(target, patch) == expected


@RELAXED
@given(overlapping_objects, overlapping_objects)
def test_merge_patch_matches_rfc_pseudocode(target: JsonObject, patch: JsonObject) -> None:
    assert merge_patch(target, patch) == rfc7396(target, patch)


@RELAXED
@given(overlapping_objects, overlapping_objects)
def test_merge_patch_is_idempotent(target: JsonObject, patch: JsonObject) -> None:
    once = merge_patch(target, patch)
    assert merge_patch(once, patch) == once


@RELAXED
@given(overlapping_objects, overlapping_objects)
def test_merge_patch_leaves_its_inputs_alone(target: JsonObject, patch: JsonObject) -> None:
    target_before, patch_before = copy.deepcopy(target), copy.deepcopy(patch)
    result = merge_patch(target, patch)
    assert target == target_before
    assert patch == patch_before
    # Nested objects of the result are new objects wherever the patch reached, so
    # changing the result later cannot reach back into the target.
    for key, value in patch.items():
        if isinstance(value, dict):
            assert result[key] is not target.get(key)


@RELAXED
@given(overlapping_objects, overlapping_objects)
def test_merge_patch_key_by_key(target: JsonObject, patch: JsonObject) -> None:
    result = merge_patch(target, patch)
    for key, value in patch.items():
        if value is None:
            assert key not in result
        elif not isinstance(value, dict):
            assert result[key] == value
        else:
            assert isinstance(result[key], dict)
    for key, value in target.items():
        if key not in patch:
            assert result[key] == value
    assert set(result) <= set(target) | set(patch)


@RELAXED
@given(stored_objects)
def test_patching_a_document_with_itself_or_its_subtree_changes_nothing(doc: JsonObject) -> None:
    assert merge_patch(doc, doc) == doc
    assert merge_patch(doc, {}) == doc
    for key, value in doc.items():
        assert merge_patch(doc, {key: value}) == doc


@RELAXED
@given(stored_objects)
def test_null_for_every_key_empties_the_document(doc: JsonObject) -> None:
    assert merge_patch(doc, dict.fromkeys(doc)) == {}


@RELAXED
@given(overlapping_objects, overlapping_objects)
def test_merge_patch_result_of_a_null_free_target_has_no_nulls_at_object_level(
    target: JsonObject, patch: JsonObject
) -> None:
    def nulls_at_object_level(value: JsonValue) -> bool:
        if isinstance(value, dict):
            return any(v is None or nulls_at_object_level(v) for v in value.values())
        return False

    clean = merge_patch({}, target)  # drops the target's own nulls
    assert not nulls_at_object_level(merge_patch(clean, patch))


# -- limits: size ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ({}, 0),
        ({"a": 1}, 1 + 8),
        ({"a": 1.5}, 1 + 8),
        ({"a": -(2**40)}, 1 + 8),
        ({"a": True}, 1 + 4),
        ({"a": False}, 1 + 4),
        ({"a": "xyz"}, 1 + 3),
        ({"a": "é"}, 1 + 2),  # UTF-8 bytes, not characters
        ({"é": "€"}, 2 + 3),
        ({"ab": {"c": 1}}, 2 + 1 + 8),
        ({"a": [1, "xy", True]}, 1 + 8 + 2 + 4),
        ({"a": {}}, 1),
        ({"a": "", "b": ""}, 2),
    ],
)
def test_json_size_counts_keys_and_values(value: JsonObject, size: int) -> None:
    assert json_size(value) == size


@pytest.mark.parametrize(
    ("section", "limit"), [(Section.TAGS, 8 * 1024), (Section.DESIRED, 32 * 1024), (Section.REPORTED, 32 * 1024)]
)
def test_section_size_limit_is_exact(section: Section, limit: int) -> None:
    assert LIMITS.section_bytes(section) == limit
    apply = {
        Section.TAGS: apply_tags_patch,
        Section.DESIRED: apply_desired_patch,
        Section.REPORTED: apply_reported_patch,
    }[section]
    at_limit = apply(fresh_twin(), sized(limit), T0)
    assert (
        json_size(
            at_limit.tags
            if section is Section.TAGS
            else (at_limit.desired if section is Section.DESIRED else at_limit.reported).properties
        )
        == limit
    )
    with pytest.raises(TwinLimitError, match=rf"{section.value} would be {limit + 1} bytes.*{limit}"):
        apply(fresh_twin(), sized(limit + 1), T0)


def test_size_limit_applies_to_the_merged_section_not_the_patch() -> None:
    twin = apply_reported_patch(fresh_twin(), sized(32 * 1024 - 9), T0)
    twin = apply_reported_patch(twin, {"n": 1}, T1)  # exactly at the limit now
    with pytest.raises(TwinLimitError, match="reported would be"):
        apply_reported_patch(twin, {"m": True}, T2)
    # Deleting makes room again; a patch that replaces a value is counted after the merge.
    smaller = apply_reported_patch(twin, {"n": None, "m": True}, T2)
    assert json_size(smaller.reported.properties) == 32 * 1024 - 4


def test_tags_size_ignores_desired_and_reported() -> None:
    twin = apply_desired_patch(fresh_twin(), sized(30000), T0)
    twin = apply_reported_patch(twin, sized(30000), T0)
    assert apply_tags_patch(twin, sized(8192), T0).tags == sized(8192)


def test_size_is_counted_without_version_and_metadata() -> None:
    twin = apply_desired_patch(fresh_twin(), sized(32 * 1024), T0)
    twin = apply_desired_patch(twin, {"$version": 5, "$metadata": {"x": 1}}, T1)
    assert json_size(twin.desired.properties) == 32 * 1024


def test_custom_limits_are_honoured() -> None:
    tiny = TwinLimits(tags_bytes=10)
    apply_tags_patch(fresh_twin(), {"a": 1}, T0, tiny)
    with pytest.raises(TwinLimitError, match="over the limit of 10 bytes"):
        apply_tags_patch(fresh_twin(), {"abc": 1}, T0, tiny)


# -- limits: depth, keys, values ---------------------------------------------------------


@pytest.mark.parametrize("section", list(Section))
def test_depth_ten_is_allowed_and_eleven_is_not(section: Section) -> None:
    assert validate_section(nested(10), section) == nested(10)
    validate_section(nested(9, {}), section)
    with pytest.raises(TwinLimitError, match="deeper than 10"):
        validate_section(nested(11), section)
    with pytest.raises(TwinLimitError, match="deeper than 10"):
        validate_section(nested(10, {"x": 1}), section)


def test_arrays_count_towards_depth() -> None:
    value: JsonValue = 1
    for _ in range(10):
        value = [value]
    with pytest.raises(TwinLimitError, match="deeper than 10"):
        validate_section({"a": value}, Section.REPORTED)
    value = 1
    for _ in range(9):
        value = [value]
    validate_section({"a": value}, Section.REPORTED)


def test_depth_limit_applies_to_patches() -> None:
    with pytest.raises(TwinLimitError, match="deeper"):
        apply_desired_patch(fresh_twin(), nested(11), T0)
    with pytest.raises(TwinLimitError, match="deeper"):
        apply_tags_patch(fresh_twin(), nested(11), T0)
    with pytest.raises(TwinLimitError, match="deeper"):
        apply_reported_patch(fresh_twin(), nested(11), T0)


@pytest.mark.parametrize(
    "key",
    [
        "a.b",
        ".",
        "$",
        "a$b",
        "$version2",
        "a b",
        " ",
        "tab\there",
        "nl\n",
        "\x00",
        "\x1f",
        "\x7f",
        "c1\x80",
        "c1\x85",
        "c1\x9f",
        "",
    ],
)
@pytest.mark.parametrize("section", list(Section))
def test_bad_property_names_are_rejected(key: str, section: Section) -> None:
    with pytest.raises(TwinLimitError, match="property name"):
        validate_section({key: 1}, section)
    with pytest.raises(TwinLimitError, match="property name"):
        validate_section({"ok": {"deeper": {key: 1}}}, section)


@pytest.mark.parametrize(
    "value",
    [
        {"\ud800": 1},
        {"ok": {"a\udfffb": 1}},
        {"a": "\udc00"},
        {"a": ["ok", "x\ud83d"]},
        {"a": {"b": "\ud800\ud800"}},
    ],
)
@pytest.mark.parametrize("section", list(Section))
def test_lone_surrogates_are_rejected(value: JsonObject, section: Section) -> None:
    # json.loads turns the escape "\ud800" into a str that has no UTF-8 form.
    with pytest.raises(TwinLimitError, match="lone surrogate"):
        validate_section(value, section)


def test_a_patch_with_a_lone_surrogate_leaves_the_twin_alone() -> None:
    twin = apply_reported_patch(fresh_twin(), {"a": 1}, T0)
    with pytest.raises(TwinLimitError, match="lone surrogate"):
        apply_reported_patch(twin, json.loads('{"b": "\\udc00"}'), T1)
    assert twin.reported.properties == {"a": 1}


@pytest.mark.parametrize("key", ["a", "A-b_c", "ünïcödé", "emoji😀", "nbsp\xa0x", "a:b", "a/b", "a#b", "1"])
def test_unusual_but_legal_property_names_pass(key: str) -> None:
    assert validate_section({key: {key: 1}}, Section.DESIRED) == {key: {key: 1}}


def test_property_name_length_is_counted_in_utf8_bytes() -> None:
    validate_section({"k" * 1024: 1}, Section.TAGS)
    validate_section({"é" * 512: 1}, Section.TAGS)  # 1024 bytes
    with pytest.raises(TwinLimitError, match="longer than 1024 bytes"):
        validate_section({"k" * 1025: 1}, Section.TAGS)
    with pytest.raises(TwinLimitError, match="longer than 1024 bytes"):
        validate_section({"é" * 513: 1}, Section.TAGS)


def test_non_string_property_names_are_rejected() -> None:
    with pytest.raises(TwinLimitError, match="not a string"):
        validate_section({1: "x"}, Section.TAGS)
    with pytest.raises(TwinLimitError, match="not a string"):
        validate_section({"a": {None: "x"}}, Section.TAGS)


def test_string_values_up_to_4kb() -> None:
    validate_section({"s": "x" * 4096}, Section.REPORTED)
    validate_section({"s": "é" * 2048}, Section.REPORTED)
    with pytest.raises(TwinLimitError, match="string at s is longer than 4096 bytes"):
        validate_section({"s": "x" * 4097}, Section.REPORTED)
    with pytest.raises(TwinLimitError, match="longer than 4096 bytes"):
        validate_section({"s": "é" * 2049}, Section.REPORTED)
    with pytest.raises(TwinLimitError, match=r"s\[1\]"):
        validate_section({"s": ["ok", "x" * 4097]}, Section.REPORTED)


@pytest.mark.parametrize("value", [4503599627370495, -4503599627370496, 0, -1, 2**31, True, False])
def test_integers_in_range_pass(value: int) -> None:
    validate_section({"n": value, "l": [value]}, Section.DESIRED)


@pytest.mark.parametrize("value", [4503599627370496, -4503599627370497, 2**63, -(2**63), 10**30])
def test_integers_out_of_range_are_rejected(value: int) -> None:
    with pytest.raises(TwinLimitError, match="integer at n is outside"):
        validate_section({"n": value}, Section.DESIRED)
    with pytest.raises(TwinLimitError, match="outside"):
        validate_section({"a": {"b": [1, value]}}, Section.DESIRED)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_rejected(value: float) -> None:
    with pytest.raises(TwinLimitError, match="not finite"):
        validate_section({"x": value}, Section.REPORTED)
    with pytest.raises(TwinLimitError, match="not finite"):
        validate_section({"x": [value]}, Section.REPORTED)


@pytest.mark.parametrize("value", [1.5, -0.0, 1e300, 5e-324])
def test_finite_floats_pass(value: float) -> None:
    validate_section({"x": value}, Section.REPORTED)


@pytest.mark.parametrize("value", [(1, 2), {1, 2}, b"bytes", object(), datetime.now(UTC)])
def test_values_that_are_not_json_are_rejected(value: object) -> None:
    with pytest.raises(TwinLimitError, match="not JSON"):
        validate_section({"x": value}, Section.TAGS)


@pytest.mark.parametrize("value", [None, [], "text", 1, [{"a": 1}]])
def test_a_section_must_be_an_object(value: object) -> None:
    with pytest.raises(TwinLimitError, match="must be a JSON object"):
        validate_section(value, Section.DESIRED)


def test_limit_errors_are_bad_requests() -> None:
    with pytest.raises(BadRequestError) as info:
        validate_section({"a.b": 1}, Section.TAGS)
    assert info.value.code == "ArgumentInvalid"
    assert "tags" in info.value.message


def test_null_deletes_are_still_checked_for_key_rules() -> None:
    with pytest.raises(TwinLimitError):
        apply_desired_patch(fresh_twin(), {"a.b": None}, T0)


@RELAXED
@given(json_objects)
def test_valid_generated_objects_pass_validation(doc: JsonObject) -> None:
    assert validate_section(doc, Section.DESIRED) is doc


@RELAXED
@given(st.dictionaries(st.text(max_size=6), json_values, max_size=4))
def test_validation_raises_only_twin_limit_errors(doc: JsonObject) -> None:
    with contextlib.suppress(TwinLimitError):
        validate_section(doc, Section.REPORTED)


# -- system keys -------------------------------------------------------------------------


def test_root_version_and_metadata_in_patches_are_ignored() -> None:
    patch: JsonObject = {"$version": 99, "$metadata": {"$lastUpdated": "x"}, "a": 1}
    twin = apply_desired_patch(fresh_twin(), patch, T0)
    assert twin.desired.properties == {"a": 1}
    assert twin.desired.version == 2
    twin = apply_reported_patch(twin, patch, T0)
    assert twin.reported.properties == {"a": 1}
    assert twin.reported.version == 2
    twin = replace_tags_and_desired(twin, None, patch, T0)
    assert twin.desired.properties == {"a": 1}
    assert twin.desired.version == 3
    assert patch == {"$version": 99, "$metadata": {"$lastUpdated": "x"}, "a": 1}  # not mutated


def test_system_keys_below_the_root_are_rejected() -> None:
    with pytest.raises(TwinLimitError, match="property name"):
        apply_desired_patch(fresh_twin(), {"a": {"$version": 1}}, T0)


def test_strip_system_keys() -> None:
    assert strip_system_keys({"$version": 1, "$metadata": {}, "a": {"b": 1}}) == {"a": {"b": 1}}
    assert strip_system_keys({}) == {}


# -- versions, revision, etag ------------------------------------------------------------


def test_new_twin_starts_at_version_one() -> None:
    twin = fresh_twin()
    assert (twin.version, twin.revision, twin.desired.version, twin.reported.version) == (1, 1, 1, 1)
    assert twin.etag == "AAAAAAAAAAE="
    assert twin.tags == {}
    assert twin.desired == PropertySet()


def test_tags_patch_bumps_version_and_revision_only() -> None:
    before = fresh_twin()
    after = apply_tags_patch(before, {"building": "43"}, T0)
    assert after.tags == {"building": "43"}
    assert (after.version, after.revision) == (2, 2)
    assert after.desired == before.desired
    assert after.reported == before.reported
    assert after.etag != before.etag
    assert before.tags == {}  # the old value is untouched


def test_desired_patch_bumps_desired_version_version_and_revision() -> None:
    twin = apply_desired_patch(fresh_twin(), {"a": 1}, T0)
    assert (twin.version, twin.revision, twin.desired.version, twin.reported.version) == (2, 2, 2, 1)
    twin = apply_desired_patch(twin, {"a": None}, T1)
    assert (twin.version, twin.revision, twin.desired.version, twin.reported.version) == (3, 3, 3, 1)
    assert twin.desired.properties == {}


def test_reported_patch_does_not_bump_top_level_version() -> None:
    twin = apply_reported_patch(fresh_twin(), {"fw": "1.0"}, T0)
    assert (twin.version, twin.revision, twin.desired.version, twin.reported.version) == (1, 2, 1, 2)
    assert twin.etag == etag_of(2)


def test_replace_tags_and_desired_versions() -> None:
    twin = apply_reported_patch(fresh_twin(), {"r": 1}, T0)
    replaced = replace_tags_and_desired(twin, {"t": 1}, None, T1)
    assert replaced.tags == {"t": 1}
    assert (replaced.version, replaced.revision, replaced.desired.version) == (2, 3, 1)
    replaced = replace_tags_and_desired(replaced, None, {"d": 1}, T1)
    assert replaced.tags == {"t": 1}
    assert replaced.desired.properties == {"d": 1}
    assert (replaced.version, replaced.revision, replaced.desired.version) == (3, 4, 2)
    assert replaced.reported == twin.reported


def test_replace_drops_keys_that_are_absent() -> None:
    twin = apply_desired_patch(fresh_twin(), {"a": 1, "b": {"c": 2}}, T0)
    twin = apply_tags_patch(twin, {"x": 1, "y": 2}, T0)
    twin = replace_tags_and_desired(twin, {"y": 3}, {"b": {"d": 4}}, T1)
    assert twin.tags == {"y": 3}
    assert twin.desired.properties == {"b": {"d": 4}}
    assert twin.desired.metadata == {
        "$lastUpdated": ISO1,
        "$lastUpdatedVersion": 3,
        "b": {"$lastUpdated": ISO1, "$lastUpdatedVersion": 3, "d": {"$lastUpdated": ISO1, "$lastUpdatedVersion": 3}},
    }


def test_replace_checks_limits() -> None:
    with pytest.raises(TwinLimitError, match="tags would be"):
        replace_tags_and_desired(fresh_twin(), sized(8193), None, T0)
    with pytest.raises(TwinLimitError, match="desired would be"):
        replace_tags_and_desired(fresh_twin(), None, sized(32 * 1024 + 1), T0)
    with pytest.raises(TwinLimitError, match="property name"):
        replace_tags_and_desired(fresh_twin(), {"a b": 1}, None, T0)
    with pytest.raises(TwinLimitError, match="deeper"):
        replace_tags_and_desired(fresh_twin(), None, nested(11), T0)


def test_a_rejected_patch_leaves_the_twin_as_it_was() -> None:
    twin = apply_desired_patch(fresh_twin(), {"a": 1}, T0)
    snapshot = copy.deepcopy(twin)
    with pytest.raises(TwinLimitError):
        apply_desired_patch(twin, {"b": float("nan")}, T1)
    assert twin == snapshot


_OPERATIONS = st.lists(
    st.tuples(st.sampled_from(["tags", "desired", "reported", "replace"]), overlapping_objects), max_size=8
)


@RELAXED
@given(_OPERATIONS)
def test_versions_and_contents_follow_every_operation(operations: list[tuple[str, JsonObject]]) -> None:
    twin = fresh_twin()
    tags: JsonObject = {}
    desired: JsonObject = {}
    reported: JsonObject = {}
    counts = {"tags": 0, "desired": 0, "reported": 0, "replace": 0}
    for step, (kind, patch) in enumerate(operations):
        now = T0 + timedelta(seconds=step)
        previous_etag = twin.etag
        if kind == "tags":
            twin = apply_tags_patch(twin, patch, now)
            tags = merge_patch(tags, patch)
        elif kind == "desired":
            twin = apply_desired_patch(twin, patch, now)
            desired = merge_patch(desired, patch)
        elif kind == "reported":
            twin = apply_reported_patch(twin, patch, now)
            reported = merge_patch(reported, patch)
        else:
            clean = merge_patch({}, patch)  # a replacement holds no nulls
            twin = replace_tags_and_desired(twin, clean, clean, now)
            tags, desired = clean, clean
        counts[kind] += 1
        assert twin.etag != previous_etag
        assert_metadata_mirrors(twin.desired.properties, twin.desired.metadata, with_version=True)
        assert_metadata_mirrors(twin.reported.properties, twin.reported.metadata, with_version=False)
    assert twin.tags == tags
    assert twin.desired.properties == desired
    assert twin.reported.properties == reported
    assert twin.revision == 1 + len(operations)
    assert twin.version == 1 + counts["tags"] + counts["desired"] + counts["replace"]
    assert twin.desired.version == 1 + counts["desired"] + counts["replace"]
    assert twin.reported.version == 1 + counts["reported"]


# -- $metadata ---------------------------------------------------------------------------


def assert_metadata_mirrors(properties: JsonObject, metadata: JsonObject, *, with_version: bool) -> None:
    """``metadata`` has exactly the object keys of ``properties`` plus stamps at every level."""
    if not properties and not metadata:
        return  # never written
    assert isinstance(metadata.get("$lastUpdated"), str)
    if with_version:
        assert isinstance(metadata.get("$lastUpdatedVersion"), int)
    else:
        assert "$lastUpdatedVersion" not in metadata
    assert {k for k in metadata if not k.startswith("$")} == set(properties)
    for key, value in properties.items():
        child = metadata[key]
        assert isinstance(child, dict)
        if isinstance(value, dict):
            assert_metadata_mirrors(value, child, with_version=with_version)
        else:
            assert {k for k in child if not k.startswith("$")} == set()
            assert isinstance(child["$lastUpdated"], str)


def test_desired_metadata_at_every_level_with_last_updated_version() -> None:
    twin = apply_desired_patch(fresh_twin(), {"a": {"b": {"c": 1}}, "d": [1, 2]}, T0)
    stamp = {"$lastUpdated": ISO0, "$lastUpdatedVersion": 2}
    assert twin.desired.metadata == {**stamp, "a": {**stamp, "b": {**stamp, "c": stamp}}, "d": stamp}


def test_reported_metadata_has_no_last_updated_version() -> None:
    twin = apply_reported_patch(fresh_twin(), {"a": {"b": 1}}, T0)
    stamp = {"$lastUpdated": ISO0}
    assert twin.reported.metadata == {**stamp, "a": {**stamp, "b": stamp}}


def test_metadata_keeps_untouched_stamps_and_refreshes_the_path() -> None:
    twin = apply_desired_patch(fresh_twin(), {"x": {"y": 1}, "other": 1}, T0)
    twin = apply_desired_patch(twin, {"x": {"z": 2}}, T1)
    meta = twin.desired.metadata
    assert meta["$lastUpdated"] == ISO1
    assert meta["$lastUpdatedVersion"] == 3
    assert meta["other"] == {"$lastUpdated": ISO0, "$lastUpdatedVersion": 2}
    x = meta["x"]
    assert isinstance(x, dict)
    assert x["$lastUpdated"] == ISO1
    assert x["y"] == {"$lastUpdated": ISO0, "$lastUpdatedVersion": 2}
    assert x["z"] == {"$lastUpdated": ISO1, "$lastUpdatedVersion": 3}


def test_deleted_keys_vanish_from_metadata_and_the_parent_records_the_change() -> None:
    twin = apply_reported_patch(fresh_twin(), {"x": {"y": 1, "z": 2}, "w": 3}, T0)
    twin = apply_reported_patch(twin, {"x": {"y": None}, "w": None}, T2)
    assert twin.reported.properties == {"x": {"z": 2}}
    assert twin.reported.metadata == {"$lastUpdated": ISO2, "x": {"$lastUpdated": ISO2, "z": {"$lastUpdated": ISO0}}}


def test_metadata_when_an_object_replaces_a_value_and_back() -> None:
    twin = apply_reported_patch(fresh_twin(), {"x": 1}, T0)
    twin = apply_reported_patch(twin, {"x": {"a": 1, "b": 2}}, T1)
    assert twin.reported.metadata["x"] == {
        "$lastUpdated": ISO1,
        "a": {"$lastUpdated": ISO1},
        "b": {"$lastUpdated": ISO1},
    }
    twin = apply_reported_patch(twin, {"x": "flat"}, T2)
    assert twin.reported.metadata["x"] == {"$lastUpdated": ISO2}


def test_tags_have_no_metadata_or_section_version() -> None:
    twin = apply_tags_patch(fresh_twin(), {"a": 1}, T0)
    assert twin.desired.metadata == {}
    assert twin.tags == {"a": 1}


# -- timestamps --------------------------------------------------------------------------


def test_isoformat_has_seven_fraction_digits_and_z() -> None:
    assert isoformat(T0) == ISO0
    assert isoformat(datetime(2024, 1, 1, tzinfo=UTC)) == "2024-01-01T00:00:00.0000000Z"


def test_isoformat_converts_other_zones_to_utc() -> None:
    berlin = timezone(timedelta(hours=2))
    assert isoformat(datetime(2024, 1, 2, 5, 4, 5, 678901, tzinfo=berlin)) == ISO0


def test_isoformat_takes_naive_times_as_utc() -> None:
    assert isoformat(T0.replace(tzinfo=None)) == ISO0


# -- documents ---------------------------------------------------------------------------


def populated_twin() -> Twin:
    twin = Twin(
        "dev-1",
        status=DeviceStatus.ENABLED,
        connection_state=ConnectionState.CONNECTED,
        last_activity_time=T2,
        status_updated_time=T0,
    )
    twin = apply_tags_patch(twin, {"building": "43"}, T0)
    twin = apply_desired_patch(twin, {"interval": 5}, T0)
    return apply_reported_patch(twin, {"fw": "1.0"}, T1)


def test_twin_document_shape() -> None:
    twin = populated_twin()
    doc = twin_document(twin)
    assert doc["deviceId"] == "dev-1"
    assert doc["etag"] == twin.etag == "AAAAAAAAAAQ="
    assert doc["version"] == 3
    assert doc["status"] == "enabled"
    assert doc["connectionState"] == "Connected"
    assert doc["lastActivityTime"] == ISO2
    assert doc["statusUpdateTime"] == ISO0
    assert doc["tags"] == {"building": "43"}
    props = doc["properties"]
    assert isinstance(props, dict)
    assert set(props) == {"desired", "reported"}
    desired, reported = props["desired"], props["reported"]
    assert isinstance(desired, dict)
    assert isinstance(reported, dict)
    assert desired["interval"] == 5
    assert desired["$version"] == 2
    assert desired["$metadata"] == {
        "$lastUpdated": ISO0,
        "$lastUpdatedVersion": 2,
        "interval": {"$lastUpdated": ISO0, "$lastUpdatedVersion": 2},
    }
    assert reported["fw"] == "1.0"
    assert reported["$version"] == 2
    assert reported["$metadata"] == {"$lastUpdated": ISO1, "fw": {"$lastUpdated": ISO1}}
    json.dumps(doc, allow_nan=False)  # the whole document is JSON


def test_twin_document_of_a_fresh_twin() -> None:
    doc = twin_document(fresh_twin())
    assert doc["lastActivityTime"] is None
    assert doc["connectionState"] == "Disconnected"
    assert doc["tags"] == {}
    props = doc["properties"]
    assert isinstance(props, dict)
    for name in ("desired", "reported"):
        section = props[name]
        assert isinstance(section, dict)
        assert section["$version"] == 1
        assert isinstance(section["$metadata"], dict)
        assert "$lastUpdated" in section["$metadata"]
    json.dumps(doc, allow_nan=False)


def test_twin_document_status_disabled() -> None:
    assert twin_document(Twin("d", status=DeviceStatus.DISABLED))["status"] == "disabled"


def test_device_twin_document_has_no_tags_or_metadata() -> None:
    doc = device_twin_document(populated_twin())
    assert doc == {"desired": {"interval": 5, "$version": 2}, "reported": {"fw": "1.0", "$version": 2}}


def test_desired_notification_is_the_patch_plus_version() -> None:
    patch: JsonObject = {"a": 1, "gone": None, "n": {"x": None}}
    assert desired_notification(patch, 7) == {"a": 1, "gone": None, "n": {"x": None}, "$version": 7}
    assert patch == {"a": 1, "gone": None, "n": {"x": None}}
    assert desired_notification({"$version": 1, "$metadata": {}, "b": 2}, 9) == {"b": 2, "$version": 9}
