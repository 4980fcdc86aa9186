#!/usr/bin/env python3
"""Writes every PromQL query of a Grafana dashboard as a Prometheus recording rule, so
that `promtool check rules` parses each one (Grafana's variables replaced by values of the
same kind: a range for $__rate_interval, a regular expression for $job and $instance).

    python3 check-queries.py kms-dashboard.json > /tmp/dashboard-rules.yaml
    promtool check rules /tmp/dashboard-rules.yaml
"""
import json
import re
import sys

SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "30s",
    "$__range": "1h",
    "$job": ".*",
    "$instance": ".*",
}


def queries(node):
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            yield node["expr"]
        query = node.get("query")
        if isinstance(query, dict) and isinstance(query.get("query"), str):
            # Template variables: label_values(METRIC, LABEL) is Grafana's, not PromQL;
            # check its selector.
            match = re.fullmatch(r"label_values\((.*),\s*\w+\)", query["query"].strip())
            if match:
                yield match.group(1)
        for value in node.values():
            yield from queries(value)
    elif isinstance(node, list):
        for value in node:
            yield from queries(value)


def main(path):
    with open(path, encoding="utf-8") as f:
        dashboard = json.load(f)
    found = list(queries(dashboard))
    if not found:
        sys.exit(f"{path}: no query found")
    print("groups:\n  - name: dashboard-queries\n    rules:")
    for i, expr in enumerate(found):
        for variable, value in SUBSTITUTIONS.items():
            expr = expr.replace(variable, value)
        if "$" in expr:
            sys.exit(f"{path}: query {i} has a variable this check does not know: {expr}")
        print(f"      - record: dashboard:query_{i}")
        print(f"        expr: {json.dumps(expr)}")
    print(f"{path}: {len(found)} queries", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
