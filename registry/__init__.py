"""Osprey's model registry: the SQL source of truth for what serves.

``registry.models`` (tables) and ``registry/migrations`` (Alembic) define the
schema; ``registry.db`` connects (SQLite embedded, PostgreSQL in production);
``registry.service.Registry`` registers versions and switches deployments, each
change a compare-and-set with an append-only event; ``registry.artifacts`` keeps
the ONNX files content-addressed; ``registry.cli`` is the SRE command line. The
server follows the registry through ``server.registry_source``.
"""
