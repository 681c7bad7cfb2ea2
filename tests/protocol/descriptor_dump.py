"""Dump the inference protocol's descriptors as canonical JSON.

Run as ``python -m tests.protocol.descriptor_dump ours|triton`` from the repository
root. ``ours`` loads Osprey's generated stubs (``server.protocol.inference``),
``triton`` loads the copies that tritonclient ships. The two cannot live in one
process: both register the ``inference.*`` symbols in protobuf's default descriptor
pool. So each side runs in a process of its own and prints a JSON document that
``test_wire_compat`` compares.

The document describes what matters on the wire and to generated code: every message
(nested ones included, map entries marked), every field (name, number, type, label,
fully-qualified type name, oneof, proto3 ``optional``, options), every enum value and
every RPC. File names and import paths are left out: they differ by design
(``inference/grpc_service.proto`` here, ``grpc_service.proto`` in tritonclient).
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

from google.protobuf import descriptor_pb2, text_format

# side -> modules holding the file descriptors (grpc_service first, then model_config)
MODULES: dict[str, tuple[str, ...]] = {
    "ours": (
        "server.protocol.inference.grpc_service_pb2",
        "server.protocol.inference.model_config_pb2",
    ),
    "triton": (
        "tritonclient.grpc.service_pb2",
        "tritonclient.grpc.model_config_pb2",
    ),
}

_FieldProto = descriptor_pb2.FieldDescriptorProto


def _options(opts: Any) -> str:
    """Options as one canonical text line ('' when none are set)."""
    return text_format.MessageToString(opts, as_one_line=True).strip()


def _type_name(name: str) -> str | None:
    return name.lstrip(".") or None


def _file_basename(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _dump_enum(enum: descriptor_pb2.EnumDescriptorProto) -> dict[str, Any]:
    return {
        "values": {v.name: v.number for v in enum.value},
        "options": _options(enum.options),
        "reserved_names": sorted(enum.reserved_name),
        "reserved_ranges": sorted([r.start, r.end] for r in enum.reserved_range),
    }


def _collect_map_entries(prefix: str, messages: Any, out: set[str]) -> None:
    for msg in messages:
        full = f"{prefix}.{msg.name}"
        if msg.options.map_entry:
            out.add(full)
        _collect_map_entries(full, msg.nested_type, out)


def _dump_message(
    prefix: str,
    msg: descriptor_pb2.DescriptorProto,
    file: str,
    map_entries: set[str],
    messages: dict[str, Any],
    enums: dict[str, Any],
) -> None:
    full = f"{prefix}.{msg.name}"
    fields: dict[str, Any] = {}
    for f in msg.field:
        type_name = _type_name(f.type_name)
        fields[f.name] = {
            "number": f.number,
            "type": _FieldProto.Type.Name(f.type),
            "label": _FieldProto.Label.Name(f.label),
            "type_name": type_name,
            "map": f.type == _FieldProto.TYPE_MESSAGE
            and f.label == _FieldProto.LABEL_REPEATED
            and type_name in map_entries,
            "oneof": msg.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else None,
            "proto3_optional": f.proto3_optional,
            "default_value": f.default_value if f.HasField("default_value") else None,
            "options": _options(f.options),
        }
    oneofs: dict[str, list[str]] = {o.name: [] for o in msg.oneof_decl}
    for f in msg.field:
        if f.HasField("oneof_index"):
            oneofs[msg.oneof_decl[f.oneof_index].name].append(f.name)
    messages[full] = {
        "file": file,
        "map_entry": msg.options.map_entry,
        "options": _options(msg.options),
        "fields": fields,
        "oneofs": {name: sorted(members) for name, members in oneofs.items()},
        "nested_types": sorted(f"{full}.{n.name}" for n in msg.nested_type),
        "nested_enums": sorted(f"{full}.{e.name}" for e in msg.enum_type),
        "reserved_names": sorted(msg.reserved_name),
        "reserved_ranges": sorted([r.start, r.end] for r in msg.reserved_range),
        "extension_ranges": sorted([r.start, r.end] for r in msg.extension_range),
    }
    for e in msg.enum_type:
        enums[f"{full}.{e.name}"] = {"file": file, **_dump_enum(e)}
    for nested in msg.nested_type:
        _dump_message(full, nested, file, map_entries, messages, enums)


def dump_files(files: list[descriptor_pb2.FileDescriptorProto]) -> dict[str, Any]:
    """Canonical description of a set of ``FileDescriptorProto`` (see module doc)."""
    map_entries: set[str] = set()
    for fdp in files:
        _collect_map_entries(fdp.package, fdp.message_type, map_entries)

    out: dict[str, Any] = {"files": {}, "messages": {}, "enums": {}, "services": {}}
    for fdp in files:
        base = _file_basename(fdp.name)
        out["files"][base] = {
            "package": fdp.package,
            "syntax": fdp.syntax or "proto2",
            "dependencies": sorted(_file_basename(d) for d in fdp.dependency),
            "options": _options(fdp.options),
            "messages": sorted(f"{fdp.package}.{m.name}" for m in fdp.message_type),
            "enums": sorted(f"{fdp.package}.{e.name}" for e in fdp.enum_type),
            "services": sorted(f"{fdp.package}.{s.name}" for s in fdp.service),
        }
        for e in fdp.enum_type:
            out["enums"][f"{fdp.package}.{e.name}"] = {"file": base, **_dump_enum(e)}
        for m in fdp.message_type:
            _dump_message(fdp.package, m, base, map_entries, out["messages"], out["enums"])
        for s in fdp.service:
            out["services"][f"{fdp.package}.{s.name}"] = {
                "file": base,
                "options": _options(s.options),
                "methods": {
                    m.name: {
                        "input_type": _type_name(m.input_type),
                        "output_type": _type_name(m.output_type),
                        "client_streaming": m.client_streaming,
                        "server_streaming": m.server_streaming,
                        "options": _options(m.options),
                    }
                    for m in s.method
                },
            }
    return out


def dump(side: str) -> dict[str, Any]:
    """Import one side's stubs (in this process) and describe their descriptors."""
    files = []
    for name in MODULES[side]:
        module = importlib.import_module(name)
        fdp = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(fdp)
        files.append(fdp)
    return dump_files(files)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in MODULES:
        print(
            f"usage: python -m tests.protocol.descriptor_dump {'|'.join(MODULES)}", file=sys.stderr
        )
        return 2
    json.dump(dump(argv[0]), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
