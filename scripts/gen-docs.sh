#!/usr/bin/env bash
# Regenerates what docs/ takes from the code: the configuration reference in docs/configuration.md,
# between its BEGIN GENERATED / END GENERATED markers (the prose around them is kept). The unit test
# `config::reference::tests::docs_configuration_md_matches_the_reference` fails until this is run
# after a configuration field, its default or its doc comment changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

doc=docs/configuration.md
begin='<!-- BEGIN GENERATED: weatherflow config --reference -->'
end='<!-- END GENERATED -->'
grep -qxF -- "$begin" "$doc" && grep -qxF -- "$end" "$doc" || {
  echo "$doc lacks the marker lines '$begin' and '$end'" >&2
  exit 1
}
generated="$(mktemp)"
trap 'rm -f "$generated" "$generated.md"' EXIT
# Environment-independent: --reference prints defaults, never the effective configuration.
cargo run -q -p weatherflow -- config --reference >"$generated"
awk -v begin="$begin" -v end="$end" -v gen="$generated" '
  $0 == begin { print; print ""; while ((getline line < gen) > 0) print line; print ""; skip = 1; next }
  $0 == end   { skip = 0 }
  !skip       { print }
' "$doc" >"$generated.md"
mv "$generated.md" "$doc"
echo "updated $doc"

# The OpenAPI document of /api/v1, generated from the handlers' annotations (jobs/src/web/openapi.rs);
# the unit test `web::openapi::tests::the_committed_document_is_the_generated_one` fails until this runs.
cargo run -q -p weatherflow -- serve --openapi >docs/schema/openapi.v1.json
echo "updated docs/schema/openapi.v1.json"
