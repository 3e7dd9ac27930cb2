"""Reads a schemathesis cassette (its network log) and reports what the API answered.

    cassette.py summary FILE       one line: requests, statuses by class, 5xx, mutations accepted
    cassette.py mutations FILE     the POST/PUT/PATCH/DELETE requests answered 2xx, one a line

Exit status 1 when a response was a 5xx (listed on stderr).
"""

import sys
from collections import Counter

import yaml


def interactions(path):
    with open(path, encoding="utf-8") as f:
        # The cassette is large; the C loader reads it in a fraction of the time.
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        return yaml.load(f, Loader=loader).get("http_interactions") or []


def status(i):
    try:
        return int(i["response"]["status"]["code"])
    except (KeyError, TypeError, ValueError):
        return 0  # no response (a connection error)


def main():
    what, path = sys.argv[1], sys.argv[2]
    items = interactions(path)
    mutations = [
        (i["request"]["method"], i["request"]["uri"], status(i))
        for i in items
        if i["request"]["method"] in ("POST", "PUT", "PATCH", "DELETE") and 200 <= status(i) < 300
    ]
    if what == "mutations":
        for m in mutations:
            print(*m)
        return 0
    classes = Counter(f"{status(i) // 100}xx" if status(i) else "none" for i in items)
    errors = [i for i in items if status(i) >= 500 or status(i) == 0]
    print(
        f"requests={len(items)} "
        + " ".join(f"{k}={v}" for k, v in sorted(classes.items()))
        + f" server_errors={len(errors)} mutations_accepted={len(mutations)}"
    )
    for i in errors:
        print(f"SERVER ERROR {status(i)} {i['request']['method']} {i['request']['uri']}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
