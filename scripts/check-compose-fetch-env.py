#!/usr/bin/env python3
"""Checks that every compose service that can start a fetch sees the same fetch settings.

Reads the output of `docker-compose --env-file .env.example -f FILE config` on stdin (the resolved
file: anchors, `<<:` merges and variables applied) and fails when two weatherflow services that can
start a fetch (the scheduler; `serve`/APP_MODE=web with POST /api/v1/runs/fetch; `run fetch`) differ in
WEATHERAPI_KEY, a WEATHERFLOW_WEATHERAPI_* or a WEATHERFLOW_FETCH_* variable, or when one of them lacks
WEATHERAPI_KEY or WEATHERFLOW_FETCH_ALLOW_SIMULATED_BESIDE_REAL altogether (a service whose own
`environment:` replaced the shared block). A file without such services passes. scripts/test.sh runs it
on every docker-compose*.yml; docs/operations.md says why.

Usage: docker-compose --env-file .env.example -f docker-compose.yml config | scripts/check-compose-fetch-env.py docker-compose.yml
"""

import sys

import yaml

REQUIRED = ("WEATHERAPI_KEY", "WEATHERFLOW_FETCH_ALLOW_SIMULATED_BESIDE_REAL")
# The modes of deploy/entrypoint.sh and the subcommands that start a fetch.
FETCHING = {"scheduler", "serve", "web", "run"}


def environment(service):
    """The service's environment as a dict, whichever form compose printed it in."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: ("" if v is None else str(v)) for k, v in env.items()}


def can_fetch(service):
    """Whether the service runs the weatherflow image in a mode that can start a fetch."""
    image = str(service.get("image", ""))
    if image.split(":", 1)[0] != "weatherflow":
        return False
    command = service.get("command") or []
    if isinstance(command, str):
        command = command.split()
    mode = command[0] if command else environment(service).get("APP_MODE", "")
    return mode in FETCHING


def fetch_settings(env):
    return {
        k: v
        for k, v in env.items()
        if k == "WEATHERAPI_KEY" or k.startswith(("WEATHERFLOW_FETCH_", "WEATHERFLOW_WEATHERAPI_"))
    }


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "<stdin>"
    config = yaml.safe_load(sys.stdin) or {}
    services = {n: s for n, s in (config.get("services") or {}).items() if can_fetch(s)}
    if not services:
        print(f"{name}: no service can start a fetch")
        return 0
    problems = []
    settings = {}
    for n, s in sorted(services.items()):
        env = environment(s)
        missing = [k for k in REQUIRED if k not in env]
        if missing:
            problems.append(f"service {n} lacks {', '.join(missing)}: merge the shared environment block")
        settings[n] = fetch_settings(env)
    first, *rest = sorted(settings)
    for n in rest:
        if settings[n] != settings[first]:
            keys = sorted(set(settings[n]) | set(settings[first]))
            differing = [k for k in keys if settings[n].get(k) != settings[first].get(k)]
            # Names only: the values may be secrets.
            problems.append(f"services {first} and {n} differ in {', '.join(differing)}")
    if problems:
        for p in problems:
            print(f"{name}: {p}", file=sys.stderr)
        return 1
    keys = ", ".join(sorted(settings[first]))
    print(f"{name}: {', '.join(sorted(services))} share the fetch settings ({keys})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
