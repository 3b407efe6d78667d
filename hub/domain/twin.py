"""Device twins: JSON merge patch, per-section versions, ``$metadata`` and IoT Hub's limits.

A twin has ``tags`` (back end only), ``desired`` (back end writes, device reads) and
``reported`` (device writes). ``desired`` and ``reported`` carry their own ``$version``;
the top-level ``version`` counts changes to tags and desired; ``revision`` (behind the
etag) counts every change, so an ``If-Match`` write fails after any concurrent change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from hub.domain.devices import SAS_AUTH, ConnectionState, DeviceAuth, DeviceStatus, etag_of
from hub.domain.json import JsonObject, JsonValue
from hub.errors import BadRequestError, TwinLimitError

__all__ = [
    "LIMITS",
    "PropertySet",
    "Section",
    "Twin",
    "TwinLimits",
    "TwinPatch",
    "apply_desired_patch",
    "apply_reported_patch",
    "apply_tags_patch",
    "apply_twin_patch",
    "desired_notification",
    "device_twin_document",
    "isoformat",
    "json_size",
    "merge_patch",
    "parse_twin_patch",
    "replace_tags_and_desired",
    "strip_system_keys",
    "twin_document",
    "validate_section",
]


class Section(StrEnum):
    TAGS = "tags"
    DESIRED = "desired"
    REPORTED = "reported"


@dataclass(frozen=True, slots=True)
class TwinLimits:
    tags_bytes: int = 8 * 1024
    desired_bytes: int = 32 * 1024
    reported_bytes: int = 32 * 1024
    depth: int = 10
    key_bytes: int = 1024
    string_bytes: int = 4 * 1024
    min_int: int = -4503599627370496
    max_int: int = 4503599627370495

    def section_bytes(self, section: Section) -> int:
        return {
            Section.TAGS: self.tags_bytes,
            Section.DESIRED: self.desired_bytes,
            Section.REPORTED: self.reported_bytes,
        }[section]


LIMITS = TwinLimits()


@dataclass(frozen=True, slots=True)
class PropertySet:
    """Desired or reported properties, without the ``$version`` / ``$metadata`` keys."""

    properties: JsonObject = field(default_factory=dict)
    metadata: JsonObject = field(default_factory=dict)
    version: int = 1


@dataclass(frozen=True, slots=True)
class Twin:
    device_id: str
    tags: JsonObject = field(default_factory=dict)
    desired: PropertySet = field(default_factory=PropertySet)
    reported: PropertySet = field(default_factory=PropertySet)
    version: int = 1
    revision: int = 1
    status: DeviceStatus = DeviceStatus.ENABLED
    status_reason: str | None = None
    status_updated_time: datetime | None = None
    connection_state: ConnectionState = ConnectionState.DISCONNECTED
    last_activity_time: datetime | None = None
    device_revision: int = 1  # the device identity's etag_revision (``deviceEtag``)
    auth: DeviceAuth = SAS_AUTH

    @property
    def etag(self) -> str:
        return etag_of(self.revision)

    @property
    def device_etag(self) -> str:
        return etag_of(self.device_revision)


def isoformat(moment: datetime) -> str:
    """UTC ISO-8601 with 7 fractional digits and ``Z``, as IoT Hub writes timestamps."""
    # An aware time in another zone must be shifted, not just relabelled with "Z";
    # naive times are taken to be UTC already (the domain only makes UTC times).
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


# -- merge patch -------------------------------------------------------------------------


def merge_patch(target: Mapping[str, JsonValue], patch: Mapping[str, JsonValue]) -> JsonObject:
    """RFC 7396 merge: present keys set or overwrite, ``null`` deletes, objects merge deeply."""
    result: JsonObject = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            current = result.get(key)
            result[key] = merge_patch(current if isinstance(current, dict) else {}, value)
        else:
            result[key] = value
    return result


def _merge_metadata(metadata: Mapping[str, JsonValue], patch: Mapping[str, JsonValue], stamp: JsonObject) -> JsonObject:
    result: JsonObject = dict(metadata)
    result.update(stamp)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            current = result.get(key)
            result[key] = _merge_metadata(current if isinstance(current, dict) else {}, value, stamp)
        else:
            result[key] = dict(stamp)
    return result


def _fresh_metadata(properties: Mapping[str, JsonValue], stamp: JsonObject) -> JsonObject:
    result: JsonObject = dict(stamp)
    for key, value in properties.items():
        result[key] = _fresh_metadata(value, stamp) if isinstance(value, dict) else dict(stamp)
    return result


def strip_system_keys(patch: Mapping[str, JsonValue]) -> JsonObject:
    """Drop the read-only ``$version`` / ``$metadata`` a caller may echo back at the root."""
    return {k: v for k, v in patch.items() if k not in ("$version", "$metadata")}


# -- limits ------------------------------------------------------------------------------


def json_size(value: JsonValue) -> int:
    """IoT Hub's size count: keys and strings by UTF-8 length, numbers 8, booleans 4."""
    if isinstance(value, bool):
        return 4
    if isinstance(value, int | float):
        return 8
    if isinstance(value, str):
        return len(value.encode())
    if value is None:
        return 4
    if isinstance(value, list):
        return sum(json_size(v) for v in value)
    return sum(len(k.encode()) + json_size(v) for k, v in value.items())


def _utf8_length(text: str, what: str, section: Section) -> int:
    # JSON escapes can spell lone surrogates ("\ud800"), which have no UTF-8 form.
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        raise TwinLimitError(f"{section}: {what} is not valid Unicode (it holds a lone surrogate)") from None


def _check_key(key: object, path: str, section: Section, limits: TwinLimits) -> None:
    # Keys reach here from Python callers too, not only from parsed JSON.
    if not isinstance(key, str):
        raise TwinLimitError(f"{section}: property name {key!r} at {path or 'the root'} is not a string")
    if not key:
        raise TwinLimitError(f"{section}: empty property name at {path or 'the root'}")
    if _utf8_length(key, f"a property name at {path or 'the root'}", section) > limits.key_bytes:
        raise TwinLimitError(
            f"{section}: property name at {path or 'the root'} is longer than {limits.key_bytes} bytes"
        )
    for ch in key:
        code = ord(ch)
        if ch in ".$ " or code < 32 or 127 <= code <= 159:
            raise TwinLimitError(
                f"{section}: property name {key!r} at {path or 'the root'} may not contain "
                "'.', '$', spaces or control characters"
            )


def _check_value(value: JsonValue, path: str, depth: int, section: Section, limits: TwinLimits) -> None:
    if depth > limits.depth:
        raise TwinLimitError(f"{section}: {path} is nested deeper than {limits.depth} levels")
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        if not limits.min_int <= value <= limits.max_int:
            raise TwinLimitError(f"{section}: integer at {path} is outside [{limits.min_int}, {limits.max_int}]")
        return
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise TwinLimitError(f"{section}: number at {path} is not finite")
        return
    if isinstance(value, str):
        if _utf8_length(value, f"the string at {path}", section) > limits.string_bytes:
            raise TwinLimitError(f"{section}: string at {path} is longer than {limits.string_bytes} bytes")
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_value(item, f"{path}[{index}]", depth + 1, section, limits)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _check_key(key, path, section, limits)
            _check_value(item, f"{path}.{key}" if path else key, depth + 1, section, limits)
        return
    raise TwinLimitError(f"{section}: value at {path} is not JSON")


def validate_section(value: object, section: Section, limits: TwinLimits = LIMITS) -> JsonObject:
    """Check a patch or a whole section against key, depth, value and size rules."""
    if not isinstance(value, dict):
        raise TwinLimitError(f"{section} must be a JSON object")
    for key, item in value.items():
        _check_key(key, "", section, limits)
        _check_value(item, key, 1, section, limits)
    return value


def _check_size(properties: JsonObject, section: Section, limits: TwinLimits) -> None:
    size = json_size(properties)
    if size > limits.section_bytes(section):
        raise TwinLimitError(
            f"{section} would be {size} bytes, over the limit of {limits.section_bytes(section)} bytes"
        )


# -- transitions -------------------------------------------------------------------------


def apply_tags_patch(
    twin: Twin, patch: JsonObject, now: datetime, limits: TwinLimits = LIMITS, *, validated: bool = False
) -> Twin:
    tags = _patch_tags(twin.tags, patch, limits, validated)
    return replace(twin, tags=tags, version=twin.version + 1, revision=twin.revision + 1)


def _patch_tags(current: JsonObject, patch: JsonObject, limits: TwinLimits, validated: bool) -> JsonObject:
    if not validated:
        validate_section(patch, Section.TAGS, limits)
    tags = merge_patch(current, patch)
    _check_size(tags, Section.TAGS, limits)
    return tags


def _patch_property_set(
    current: PropertySet,
    patch: JsonObject,
    section: Section,
    now: datetime,
    limits: TwinLimits,
    validated: bool = False,
) -> PropertySet:
    patch = strip_system_keys(patch)
    if not validated:
        validate_section(patch, section, limits)
    properties = merge_patch(current.properties, patch)
    _check_size(properties, section, limits)
    version = current.version + 1
    stamp: JsonObject = {"$lastUpdated": isoformat(now)}
    if section is Section.DESIRED:
        stamp["$lastUpdatedVersion"] = version
    metadata = _merge_metadata(current.metadata, patch, stamp)
    return PropertySet(properties, metadata, version)


def apply_desired_patch(
    twin: Twin, patch: JsonObject, now: datetime, limits: TwinLimits = LIMITS, *, validated: bool = False
) -> Twin:
    desired = _patch_property_set(twin.desired, patch, Section.DESIRED, now, limits, validated)
    return replace(twin, desired=desired, version=twin.version + 1, revision=twin.revision + 1)


def apply_reported_patch(twin: Twin, patch: JsonObject, now: datetime, limits: TwinLimits = LIMITS) -> Twin:
    reported = _patch_property_set(twin.reported, patch, Section.REPORTED, now, limits)
    return replace(twin, reported=reported, revision=twin.revision + 1)


def apply_twin_patch(
    twin: Twin,
    tags: JsonObject | None,
    desired: JsonObject | None,
    now: datetime,
    limits: TwinLimits = LIMITS,
    *,
    validated: bool = False,
) -> Twin:
    """A back-end PATCH (from REST or a twin update job): tags and desired merged, ``None``
    leaving a section alone; the twin's ``version`` steps once for the whole patch.
    ``validated``: the patch passed validate_section already (a job checks its patch once,
    not once per twin); the merged sections' sizes are still checked."""
    new_tags = twin.tags if tags is None else _patch_tags(twin.tags, tags, limits, validated)
    new_desired = (
        twin.desired
        if desired is None
        else _patch_property_set(twin.desired, desired, Section.DESIRED, now, limits, validated)
    )
    return replace(twin, tags=new_tags, desired=new_desired, version=twin.version + 1, revision=twin.revision + 1)


def replace_tags_and_desired(
    twin: Twin, tags: JsonObject | None, desired: JsonObject | None, now: datetime, limits: TwinLimits = LIMITS
) -> Twin:
    """PUT semantics: whatever is given replaces the section wholesale (``None`` keeps it)."""
    new_tags = twin.tags
    if tags is not None:
        new_tags = validate_section(tags, Section.TAGS, limits)
        _check_size(new_tags, Section.TAGS, limits)
    new_desired = twin.desired
    if desired is not None:
        properties = validate_section(strip_system_keys(desired), Section.DESIRED, limits)
        _check_size(properties, Section.DESIRED, limits)
        version = twin.desired.version + 1
        stamp: JsonObject = {"$lastUpdated": isoformat(now), "$lastUpdatedVersion": version}
        new_desired = PropertySet(properties, _fresh_metadata(properties, stamp), version)
    return replace(twin, tags=new_tags, desired=new_desired, version=twin.version + 1, revision=twin.revision + 1)


# -- documents ---------------------------------------------------------------------------


# IoT Hub's "never": a section nobody has written shows this as its $lastUpdated.
NEVER_UPDATED = "0001-01-01T00:00:00Z"


def _section_document(props: PropertySet, with_metadata: bool) -> JsonObject:
    doc: JsonObject = dict(props.properties)
    if with_metadata:
        doc["$metadata"] = props.metadata or {"$lastUpdated": NEVER_UPDATED}
    doc["$version"] = props.version
    return doc


def twin_document(twin: Twin) -> JsonObject:
    """The twin as the service API returns it."""
    return {
        "deviceId": twin.device_id,
        "etag": twin.etag,
        "deviceEtag": twin.device_etag,
        "status": twin.status.value,
        "statusReason": twin.status_reason,
        "statusUpdateTime": isoformat(twin.status_updated_time) if twin.status_updated_time else None,
        "connectionState": twin.connection_state.value,
        "lastActivityTime": isoformat(twin.last_activity_time) if twin.last_activity_time else None,
        "cloudToDeviceMessageCount": 0,
        "authenticationType": twin.auth.kind.value,
        "x509Thumbprint": twin.auth.thumbprint_document(),
        "version": twin.version,
        "capabilities": {"iotEdge": False},
        "tags": dict(twin.tags),
        "properties": {
            "desired": _section_document(twin.desired, True),
            "reported": _section_document(twin.reported, True),
        },
    }


def device_twin_document(twin: Twin) -> JsonObject:
    """The body of the device's twin GET reply: desired and reported, no tags, no metadata."""
    return {"desired": _section_document(twin.desired, False), "reported": _section_document(twin.reported, False)}


def desired_notification(patch: JsonObject, version: int) -> JsonObject:
    """The body pushed on ``$iothub/twin/PATCH/properties/desired/``: the patch plus ``$version``."""
    body: JsonObject = dict(strip_system_keys(patch))
    body["$version"] = version
    return body


TwinSectionName = Literal["tags", "desired", "reported"]


# -- back-end patch bodies ---------------------------------------------------------------

# What a twin body may carry besides tags and properties: the twin's read-only fields, which
# the SDKs echo back when they send a twin they read (Python's Twin model, Node's Twin class).
# IoT Hub ignores them, and so does the hub.
TWIN_READ_ONLY_FIELDS = frozenset(
    {
        "deviceId",
        "moduleId",
        "etag",
        "deviceEtag",
        "version",
        "status",
        "statusReason",
        "statusUpdateTime",
        "connectionState",
        "lastActivityTime",
        "cloudToDeviceMessageCount",
        "authenticationType",
        "x509Thumbprint",
        "capabilities",
        "deviceScope",
        "parentScopes",
        "modelId",
        "$metadata",
        "$version",
    }
)
_TWIN_FIELDS = TWIN_READ_ONLY_FIELDS | {"tags", "properties", "desired"}
_PROPERTIES_FIELDS = frozenset({"desired", "reported"})


@dataclass(frozen=True, slots=True)
class TwinPatch:
    """What a back end asks to change in a twin: ``tags`` and ``desired`` (None: leave alone)."""

    tags: JsonObject | None = None
    desired: JsonObject | None = None

    @property
    def is_empty(self) -> bool:
        return self.tags is None and self.desired is None

    def document(self) -> JsonObject:
        """The patch in IoT Hub's twin shape: ``{"tags": ..., "properties": {"desired": ...}}``."""
        doc: JsonObject = {}
        if self.tags is not None:
            doc["tags"] = self.tags
        if self.desired is not None:
            doc["properties"] = {"desired": self.desired}
        return doc


def _object_or_none(value: JsonValue, where: str) -> JsonObject | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRequestError(f"{where} must be a JSON object")
    return value


def parse_twin_patch(body: object, *, where: str = "twin", reported: Literal["ignore", "refuse"]) -> TwinPatch:
    """A back end's twin body (``PATCH``/``PUT /twins/{id}``, a job's ``updateTwin``) as a TwinPatch.

    ``tags`` and ``properties.desired`` are what it changes; ``desired`` at the top level is
    the 2016 preview spelling of ``properties.desired`` (both at once is an error). The
    twin's read-only fields (TWIN_READ_ONLY_FIELDS) are accepted and ignored; any other key
    is a BadRequestError that names it. ``properties.reported`` is read-only too: ignored
    where SDKs echo a whole twin (``reported="ignore"``), and where it cannot be an echo (a
    job) accepted only empty. The sections' contents are checked by validate_section
    (limits), not here."""
    if not isinstance(body, dict):
        raise BadRequestError(f"{where} must be a JSON object")
    unknown = sorted(set(body) - _TWIN_FIELDS)
    if unknown:
        raise BadRequestError(
            f"{where} has unknown field {unknown[0]!r}: a twin patch takes tags and properties.desired"
        )
    tags = _object_or_none(body.get("tags"), f"{where}.tags")
    desired = _object_or_none(body.get("desired"), f"{where}.desired")
    properties = _object_or_none(body.get("properties"), f"{where}.properties")
    if properties is not None:
        unknown = sorted(set(properties) - _PROPERTIES_FIELDS)
        if unknown:
            raise BadRequestError(
                f"{where}.properties has unknown field {unknown[0]!r}: it holds desired (and read-only reported)"
            )
        nested = _object_or_none(properties.get("desired"), f"{where}.properties.desired")
        if nested is not None:
            if desired is not None:
                raise BadRequestError(
                    f"{where} gives both desired and properties.desired; use properties.desired "
                    "(top-level desired is the 2016 preview spelling of the same thing)"
                )
            desired = nested
        reported_section = _object_or_none(properties.get("reported"), f"{where}.properties.reported")
        if reported == "refuse" and reported_section:
            raise BadRequestError(f"{where} may change only tags and properties.desired, not properties.reported")
    return TwinPatch(tags, desired)
