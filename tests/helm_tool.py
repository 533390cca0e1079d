"""Lint and render Helm charts through helm-python-sdk (Helm as a library) for tests/tests/helm_charts.rs.

Reads one JSON request on stdin and writes one JSON answer on stdout:

  {"op": "lint" | "render", "chart": DIR, "values": [SOURCE, ...], "name": RELEASE, "namespace": NS}

Each SOURCE is applied in order, as helm's flags are: {"file": PATH} (-f), {"set": EXPR} (--set),
{"set_file": EXPR} (--set-file). Answers:

  lint:   {"ok": true, "messages": [{"severity": 0-3, "path": ..., "error": ...}]}
  render: {"ok": true, "manifests": {TEMPLATE: YAML}}  or  {"ok": false, "kind": ERROR CLASS, "error": TEXT}

A missing or broken helm-python-sdk is not an answer: the import error goes to stderr with exit code 3.
"""

import json
import sys

try:
    import helm_python
except Exception as e:  # noqa: BLE001 - any import failure must stop the tests
    sys.stderr.write(
        f"helm_tool.py: cannot import helm_python ({type(e).__name__}: {e}); "
        "install it with `python3 -m pip install helm-python-sdk==0.2.2` (scripts/test.sh does)\n"
    )
    sys.exit(3)


def merge(base, over):
    """Helm's coalescing of value sources: maps merge key by key, anything else replaces; null deletes."""
    out = dict(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def values(sources):
    merged = {}
    for s in sources:
        if "file" in s:
            with open(s["file"], encoding="utf-8") as f:
                layer = helm_python.values_from_yaml(f.read())
        elif "set" in s:
            layer = helm_python.parse_set_string(s["set"])
        elif "set_file" in s:
            layer = helm_python.parse_set_file(s["set_file"])
        else:
            raise ValueError(f"unknown values source {s!r}")
        merged = merge(merged, layer or {})
    return merged


def main():
    req = json.load(sys.stdin)
    vals = values(req.get("values", []))
    try:
        if req["op"] == "lint":
            report = helm_python.lint(req["chart"], vals, namespace=req.get("namespace"))
            answer = {"ok": True, "messages": report.get("messages", [])}
        elif req["op"] == "render":
            chart = helm_python.Chart.load(req["chart"])
            manifests = chart.render(
                vals, name=req["name"], namespace=req["namespace"], is_install=True
            )
            answer = {"ok": True, "manifests": manifests}
        else:
            raise ValueError(f"unknown op {req['op']!r}")
    except helm_python.HelmError as e:
        answer = {"ok": False, "kind": type(e).__name__, "error": str(e)}
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
