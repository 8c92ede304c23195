#!/usr/bin/env bash
# readme_check.sh README -- every C program the README shows is an example file, verbatim:
# a block opened by `<!-- example: PATH -->` and a ```c fence must equal PATH (relative
# to the repository), so the README's code is compiled and run by the tests.
set -euo pipefail
readme="$1"
root="$(cd "$(dirname "$readme")" && pwd)"
python3 - "$readme" "$root" <<'PY'
import re, sys
readme, root = sys.argv[1], sys.argv[2]
text = open(readme, encoding="utf-8").read()
blocks = re.findall(r"<!-- example: (\S+) -->\n```c\n(.*?)```\n", text, re.S)
fences = len(re.findall(r"^```c$", text, re.M))
bad = 0
if not blocks:
    print("FAIL: no <!-- example: PATH --> blocks in " + readme); bad = 1
if fences != len(blocks):
    print(f"FAIL: {fences} C blocks but {len(blocks)} are quoted example files"); bad = 1
for path, code in blocks:
    want = open(f"{root}/{path}", encoding="utf-8").read()
    if code != want:
        print(f"FAIL: the README's copy of {path} differs from the file"); bad = 1
    else:
        print(f"ok: README quotes {path}")
sys.exit(bad)
PY
