"""Schema contracts: a YAML or JSON file fixing column types, transforms, required
columns and dedupe keys. Pure Python (no pyarrow), so it is cheap to test.

    columns:
      email:      {type: lower_string, required: true}
      account_id: {type: integer, required: true}
      amount:     {type: "decimal(12,2)"}
      active:     {type: boolean}
      signup:     {type: date, formats: ["%Y-%m-%d", "%d/%m/%Y"]}
      seen_at:    {type: timestamp, formats: ["%Y-%m-%d %H:%M:%S"], timezone: Europe/Paris}
    dedupe: [email]
    extra_columns: keep      # keep (inferred types) | drop | reject

Column keys are matched against the normalized (snake_case) names, or against the
original header text with ``source: "Original Name"``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import BadContract

MAX_CONTRACT_BYTES = 1024 * 1024
TYPES = ("string", "lower_string", "integer", "float", "decimal", "boolean", "date", "timestamp")
TYPE_ALIASES = {"str": "string", "text": "string", "lower": "lower_string", "lower-trim": "lower_string",
                "lower_trim": "lower_string", "email": "lower_string", "int": "integer", "bigint": "integer",
                "double": "float", "number": "float", "bool": "boolean", "datetime": "timestamp"}
EXTRA_COLUMNS = ("keep", "drop", "reject")
DEFAULT_DATE_FORMATS = ("%Y-%m-%d",)
DEFAULT_TIMESTAMP_FORMATS = ("iso8601",)
_DECIMAL = re.compile(r"^decimal\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)$")


@dataclass(frozen=True)
class ColumnRule:
    name: str
    type: str
    required: bool = False
    source: str | None = None
    precision: int = 0
    scale: int = 0
    formats: tuple[str, ...] = ()
    timezone: str | None = None

    def describe(self) -> str:
        return f"decimal({self.precision},{self.scale})" if self.type == "decimal" else self.type


@dataclass(frozen=True)
class Contract:
    columns: tuple[ColumnRule, ...]
    dedupe: tuple[str, ...] = ()
    extra_columns: str = "keep"
    origin: str = ""

    def rule_for(self, name: str, original: str) -> ColumnRule | None:
        for rule in self.columns:
            if rule.source is not None:
                if rule.source == original:
                    return rule
            elif rule.name == name:
                return rule
        return None


def load_contract(path: Path) -> Contract:
    """Read and check a contract file (JSON, or YAML by its extension)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadContract(f"cannot read the schema contract {path.name}: {exc.strerror}") from exc
    if len(data) > MAX_CONTRACT_BYTES:
        raise BadContract(f"the schema contract {path.name} is over {MAX_CONTRACT_BYTES} bytes")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml  # type: ignore[import-untyped,unused-ignore]

            raw = yaml.safe_load(data)
        else:
            raw = json.loads(data)
    except Exception as exc:  # yaml.YAMLError, ValueError: the contract's text, not our bug
        raise BadContract(f"the schema contract {path.name} does not parse: {exc}") from exc
    return parse_contract(raw, origin=path.name)


def parse_contract(raw: Any, *, origin: str = "") -> Contract:
    where = f"schema contract {origin}".strip()
    if not isinstance(raw, Mapping) or not isinstance(raw.get("columns"), Mapping):
        raise BadContract(f"{where} must be an object with a 'columns' mapping of name -> rule")
    unknown = set(raw) - {"columns", "dedupe", "extra_columns", "required"}
    if unknown:
        raise BadContract(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    required = {str(n) for n in raw.get("required") or []}
    rules = []
    for name, spec in raw["columns"].items():
        rules.append(_rule(str(name), spec, str(name) in required, where))
    names = {r.name for r in rules}
    dedupe = tuple(str(k) for k in raw.get("dedupe") or [])
    missing = [k for k in dedupe if k not in names]
    if missing:
        raise BadContract(f"{where}: dedupe key(s) {', '.join(missing)} are not contract columns")
    extra = str(raw.get("extra_columns", "keep")).lower()
    if extra not in EXTRA_COLUMNS:
        raise BadContract(f"{where}: extra_columns must be one of {', '.join(EXTRA_COLUMNS)}, got {extra!r}")
    return Contract(tuple(rules), dedupe, extra, origin)


def _rule(name: str, spec: Any, required: bool, where: str) -> ColumnRule:
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, Mapping):
        raise BadContract(f"{where}: column {name!r} must be a type name or an object with 'type'")
    unknown = set(spec) - {"type", "required", "source", "precision", "scale", "formats", "format", "timezone"}
    if unknown:
        raise BadContract(f"{where}: column {name!r} has unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    type_name = str(spec.get("type", "string")).strip().lower()
    precision, scale = int(spec.get("precision", 18) or 18), int(spec.get("scale", 0) or 0)
    match = _DECIMAL.match(type_name)
    if match:
        type_name, precision, scale = "decimal", int(match[1]), int(match[2])
    type_name = TYPE_ALIASES.get(type_name, type_name)
    if type_name not in TYPES:
        raise BadContract(f"{where}: column {name!r} has type {type_name!r}; known: {', '.join(TYPES)}, "
                            "decimal(p,s)")
    if type_name == "decimal" and not (1 <= precision <= 38 and 0 <= scale <= precision):
        raise BadContract(f"{where}: column {name!r}: decimal({precision},{scale}) needs 1 <= p <= 38, 0 <= s <= p")
    formats = spec.get("formats", spec.get("format"))
    if isinstance(formats, str):
        formats = [formats]
    if formats is not None and (not isinstance(formats, list) or not all(isinstance(f, str) for f in formats)):
        raise BadContract(f"{where}: column {name!r}: formats must be a list of strptime formats")
    default = DEFAULT_DATE_FORMATS if type_name == "date" else DEFAULT_TIMESTAMP_FORMATS
    timezone = spec.get("timezone")
    if timezone is not None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(str(timezone))
        except (ZoneInfoNotFoundError, ValueError):
            raise BadContract(f"{where}: column {name!r}: unknown time zone {timezone!r}") from None
    return ColumnRule(
        name=name,
        type=type_name,
        required=bool(spec.get("required", required)),
        source=str(spec["source"]) if spec.get("source") is not None else None,
        precision=precision,
        scale=scale,
        formats=tuple(formats) if formats else (default if type_name in ("date", "timestamp") else ()),
        timezone=str(timezone) if timezone is not None else None,
    )
