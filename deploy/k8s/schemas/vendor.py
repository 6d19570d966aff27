#!/usr/bin/env python3
"""Copy the Kubernetes JSON schemas deploy/k8s uses out of the kubernetes-validate wheel.

    pip download --no-deps -d /tmp/kv kubernetes-validate==1.37.0
    unzip -q /tmp/kv/kubernetes_validate-1.37.0-py3-none-any.whl -d /tmp/kv/whl
    python3 deploy/k8s/schemas/vendor.py /tmp/kv/whl/kubernetes_validate/kubernetes-json-schema/v1.30.0-local-strict

The kind files are copied unchanged. `_definitions.json` (1.2 MB upstream, every API group) is
cut down to the definitions those kinds reach through `$ref`, each one copied unchanged.
"""
import json
import pathlib
import re
import shutil
import sys

KINDS = [
    "configmap-v1.json",
    "deployment-apps-v1.json",
    "poddisruptionbudget-policy-v1.json",
    "secret-v1.json",
    "service-v1.json",
]
REF = re.compile(r'"\$ref":\s*"[^"#]*#/\$defs/([^"]+)"')


def main(source: pathlib.Path) -> None:
    target = pathlib.Path(__file__).parent / source.name
    target.mkdir(exist_ok=True)
    definitions = json.loads((source / "_definitions.json").read_text())
    pending = []
    for kind in KINDS:
        shutil.copyfile(source / kind, target / kind)
        pending += REF.findall((source / kind).read_text())
    keep = set()
    while pending:
        name = pending.pop()
        if name not in keep:
            keep.add(name)
            pending += REF.findall(json.dumps(definitions["$defs"][name]))
    definitions["$defs"] = {k: v for k, v in definitions["$defs"].items() if k in keep}
    (target / "_definitions.json").write_text(json.dumps(definitions, indent=2, ensure_ascii=False) + "\n")
    print(f"{target}: {len(KINDS)} kinds, {len(keep)} definitions")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
