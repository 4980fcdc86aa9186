#!/usr/bin/env python3
"""Static checks of the kms chart that need no `helm` binary (for machines without one;
`helm lint` and `helm template` do more):

- Chart.yaml is a v2 chart with a name and a version;
- values.yaml, and values.yaml with the required secrets filled in, satisfy
  values.schema.json (and a bad value is refused by it);
- every `.Values.x.y` a template reads is defined in values.yaml;
- each template's `{{ ... }}` actions are closed, and its if/range/with/define blocks
  are balanced by `end`s.

    python3 kms-server/deploy/helm/check-chart.py kms-server/deploy/helm/kms
"""
import copy
import json
import pathlib
import re
import sys

import jsonschema
import yaml

OPENERS = re.compile(r"\{\{-?\s*(if|range|with|define|block)\b")
ENDS = re.compile(r"\{\{-?\s*end\s*-?\}\}")
VALUES = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def fail(message):
    print(f"check-chart: {message}", file=sys.stderr)
    sys.exit(1)


def defined(values, path):
    node = values
    for key in path:
        if not isinstance(node, dict):
            return True  # a leaf read further (e.g. a map of settings)
        if key not in node:
            return False
        node = node[key]
    return True


def main(chart_dir):
    chart = pathlib.Path(chart_dir)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    if meta.get("apiVersion") != "v2" or not meta.get("name") or not meta.get("version"):
        fail("Chart.yaml needs apiVersion v2, a name and a version")
    values = yaml.safe_load((chart / "values.yaml").read_text())
    schema = json.loads((chart / "values.schema.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    jsonschema.Draft7Validator.check_schema(schema)
    filled = copy.deepcopy(values)
    filled["secret"]["masterKey"] = "A" * 43 + "="
    filled["secret"]["databaseUrl"] = "postgres://kms:pw@db:5432/kms"
    filled["redis"]["url"] = "redis://redis:6379/0"
    for name, doc in (("values.yaml", values), ("values.yaml with secrets", filled)):
        errors = sorted(validator.iter_errors(doc), key=str)
        if errors:
            fail(f"{name} does not satisfy values.schema.json: {errors[0].message}")
    bad = copy.deepcopy(filled)
    bad["securityContext"]["allowPrivilegeEscalation"] = True
    bad["config"]["KMS_MASTER_KEY"] = "x"
    if len(list(validator.iter_errors(bad))) != 2:
        fail("values.schema.json accepts a privilege escalation or KMS_MASTER_KEY in config")
    templates = sorted((chart / "templates").rglob("*"))
    checked = 0
    for path in templates:
        if not path.is_file():
            continue
        text = path.read_text()
        name = path.relative_to(chart)
        if text.count("{{") != text.count("}}"):
            fail(f"{name}: unbalanced {{{{ }}}}")
        opened, ended = len(OPENERS.findall(text)), len(ENDS.findall(text))
        if opened != ended:
            fail(f"{name}: {opened} if/range/with/define blocks but {ended} ends")
        for match in VALUES.finditer(text):
            keys = match.group(1).strip(".").split(".")
            if not defined(values, keys):
                fail(f"{name}: .Values.{'.'.join(keys)} is not in values.yaml")
        checked += 1
    print(f"check-chart: {chart}: Chart.yaml, values against the schema, {checked} templates: ok")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parent / "kms")
