"""What a backup of this project may contain, checked before anything is restored.

A dump is a list of statements PostgreSQL runs. Even signed, a backup is only as clean as the
database it was made from, so the restore runs as a role that holds no more than the
project's schemas, and first reads the dump's table of contents (``pg_restore --list``) and
schema (``pg_restore --schema-only``): objects outside the project's schemas, kinds of object
the project never makes (extensions, schemas, languages, casts, ...), functions its
migrations do not create, and SECURITY DEFINER anywhere but the functions the migrations
declare so, refuse the whole backup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PROJECT_SCHEMAS = ("auth", "media")
MIGRATIONS = tuple(Path(__file__).resolve().parents[2] / "services" / schema / "migrations"
                   for schema in PROJECT_SCHEMAS)
# Made by the audit sealing (deploy/postgres/keep-audit.sql, run by db-grants or
# deploy.roles.seal_audit_tables), which needs a superuser: never restored, made again.
SEALING_FUNCTION = "public.tempo_keep_audit"
SEALING_EVENT_TRIGGER = "tempo_keep_audit"

# Restored as they come, inside the project's schemas.
RESTORED_KINDS = ("TABLE DATA", "FK CONSTRAINT", "SEQUENCE OWNED BY", "SEQUENCE SET",
                  "CONSTRAINT", "SEQUENCE", "DEFAULT", "TRIGGER", "COMMENT", "FUNCTION",
                  "INDEX", "TABLE", "VIEW", "ACL")
# Checked, then left to the target: its schemas come from the roles set-up.
SKIPPED_KINDS = ("EVENT TRIGGER", "SCHEMA")
# The closed public schema is the roles set-up's too (deploy/postgres/10-roles.sh).
SKIPPED_ACL = "SCHEMA public"
_KINDS = sorted(RESTORED_KINDS + SKIPPED_KINDS, key=len, reverse=True)
_ENTRY = re.compile(r"(\d+); \d+ \d+ (.*)")
_FUNCTION = re.compile(r"CREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+([\w\".]+)\s*\(", re.I)
_DEFINER_HEADER = re.compile(
    r"CREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+([\w\".]+)\s*\([^)]*\)[^;$]*?"
    r"SECURITY\s+DEFINER", re.I)
_DEFINER = re.compile(r"SECURITY\s+DEFINER", re.I)


@dataclass(frozen=True, slots=True)
class Entry:
    line: str
    kind: str
    schema: str
    name: str

    @property
    def function(self) -> str:
        return f"{self.schema}.{self.name.split('(', 1)[0]}"


@dataclass(frozen=True, slots=True)
class Known:
    functions: frozenset[str]
    definers: frozenset[str]


def known_objects(folders: tuple[Path, ...] = MIGRATIONS) -> Known:
    """The functions the project's migrations create, and which of them are SECURITY
    DEFINER, read from the migration files themselves."""
    functions: set[str] = set()
    definers: set[str] = set()
    for folder in folders:
        for path in sorted(folder.glob("*.sql")):
            text = path.read_text(encoding="utf-8")
            functions.update(name.replace('"', "") for name in _FUNCTION.findall(text))
            definers.update(name.replace('"', "") for name in _DEFINER_HEADER.findall(text))
    return Known(frozenset(functions), frozenset(definers))


def parse_toc(listing: str) -> list[Entry]:
    """The entries of ``pg_restore --list``: ``id; tableoid oid KIND SCHEMA NAME OWNER``.
    A kind this module does not know is kept as ``?`` (and refused)."""
    entries = []
    for line in listing.splitlines():
        match = _ENTRY.fullmatch(line.strip())
        if match is None:
            continue
        rest = match.group(2)
        kind = next((k for k in _KINDS if rest.startswith(k + " ")), "?")
        words = rest[len(kind) + 1:].split(" ") if kind != "?" else rest.split(" ")
        schema = words[0] if words else ""
        name = " ".join(words[1:-1])
        entries.append(Entry(line, kind if kind != "?" else rest, schema, name))
    return entries


def problems(entries: list[Entry], schema_sql: str, known: Known) -> list[str]:
    found = []
    allowed_functions = known.functions | {SEALING_FUNCTION}
    for entry in entries:
        kind = entry.kind
        if kind not in RESTORED_KINDS + SKIPPED_KINDS:
            found.append(f"{kind}")
        elif kind == "SCHEMA":
            if entry.name not in PROJECT_SCHEMAS:
                found.append(f"SCHEMA {entry.name}")
        elif kind == "EVENT TRIGGER":
            if entry.name != SEALING_EVENT_TRIGGER:
                found.append(f"EVENT TRIGGER {entry.name}")
        elif kind == "ACL":
            if entry.schema == "-" and entry.name not in {
                    f"SCHEMA {s}" for s in (*PROJECT_SCHEMAS, "public")}:
                found.append(f"ACL {entry.name}")
            elif entry.schema != "-" and entry.schema not in PROJECT_SCHEMAS and not (
                    entry.schema == "public"
                    and entry.name.startswith("FUNCTION tempo_keep_audit(")):
                found.append(f"ACL in schema {entry.schema}")
        elif kind == "FUNCTION":
            if entry.function not in allowed_functions:
                found.append(f"FUNCTION {entry.schema}.{entry.name} (not made by the "
                             "project's migrations)")
        elif entry.schema not in PROJECT_SCHEMAS:
            found.append(f"{kind} {entry.schema}.{entry.name}")
    definers = [name.replace('"', "") for name in _DEFINER_HEADER.findall(schema_sql)]
    if len(_DEFINER.findall(schema_sql)) != len(definers):
        found.append("SECURITY DEFINER outside a function declaration")
    found += [f"SECURITY DEFINER function {name} (the project's migrations make no such "
              "function)" for name in definers if name not in known.definers]
    return found


def _restored(entry: Entry) -> bool:
    if entry.kind == "ACL":
        return entry.name != SKIPPED_ACL and not (
            entry.schema == "public" and entry.name.startswith("FUNCTION tempo_keep_audit("))
    return entry.kind in RESTORED_KINDS and not (
        entry.kind == "FUNCTION" and entry.function == SEALING_FUNCTION)


def restore_list(entries: list[Entry]) -> str:
    """The ``--use-list`` for pg_restore: every entry but the skipped ones, in dump order
    (a dump read from a pipe can only be restored in order)."""
    return "".join(entry.line + "\n" for entry in entries if _restored(entry))
