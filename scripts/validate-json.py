#!/usr/bin/python3
"""Validates JSON documents against a JSON Schema (draft 2020-12) with Python's `jsonschema`, a
validator that is not ours (Debian's python3-jsonschema).

usage: validate-json.py SCHEMA DOCUMENTS
  SCHEMA     the schema file (checked against the draft's metaschema first)
  DOCUMENTS  a JSON array of documents

Prints a JSON array with one entry per document: null when it is valid, else the first error's
message and path. Exits 2 when the schema itself is invalid.
"""
import json
import sys

try:
    import jsonschema
except ImportError:
    sys.exit("python3-jsonschema is missing: apt-get install python3-jsonschema")


def main() -> None:
    schema_path, docs_path = sys.argv[1], sys.argv[2]
    with open(schema_path, encoding="utf-8") as f:
        schema = json.load(f)
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        print(f"{schema_path} is not a valid draft 2020-12 schema: {e.message}", file=sys.stderr)
        sys.exit(2)
    validator = jsonschema.Draft202012Validator(schema)
    with open(docs_path, encoding="utf-8") as f:
        docs = json.load(f)
    out = []
    for doc in docs:
        error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
        out.append(None if error is None else f"{'/'.join(map(str, error.absolute_path))}: {error.message}")
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
