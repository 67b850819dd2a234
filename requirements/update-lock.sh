#!/usr/bin/env bash
# Regenerate requirements/lock.txt: the exact versions, with their sha256 hashes, of everything
# CI installs (requirements/ci.in: torch and torchvision; pyproject.toml: the package's
# dependencies and its `dev` extra, through classicnets[export] and classicnets[timm]), for
# CPython 3.11 on Linux x86_64, the interpreter and platform of CI and these machines.
#
#   requirements/update-lock.sh                          # keep every pin that pyproject.toml
#                                                        # still allows, resolve the rest
#   requirements/update-lock.sh --upgrade                # newest allowed versions of all
#   requirements/update-lock.sh --upgrade-package NAME   # newest allowed NAME only
#
# The tool is pip-tools' pip-compile, pinned below and installed into a throwaway virtualenv.
# Why it and not the others, on a fresh machine here:
# * it resolves with pip's own resolver and pip's own wheel selection, so the lock holds what
#   the installer the README and .ci/run use (pip) picks, and it only needs pip from PyPI;
# * it writes a plain requirements file with every file's hash that pip's --require-hashes
#   checks, and it keeps the existing pins unless told to upgrade, so a change to
#   pyproject.toml moves only what it must;
# * `uv pip compile` would do as well, but it is a second resolver beside the installer and
#   ignores pip's settings; `pip freeze` records only what one machine has installed, with no
#   hashes and with whatever else that machine holds.
# It resolves against PyPI alone (this machine's pip settings, local wheel folders and extra
# indexes are switched off) so the hashes are those of PyPI's files, the ones a fresh machine
# downloads. The project itself is not in the lock (hash checking refuses editable installs):
# install it after the lock with `pip install --no-deps --no-build-isolation -e .`.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
"$python" - <<'PY'
import platform
import sys

if sys.version_info[:2] != (3, 11) or sys.platform != "linux" or platform.machine() != "x86_64":
    sys.exit(f"update-lock.sh: the lock is for CPython 3.11 on Linux x86_64 (CI's); this is "
             f"Python {platform.python_version()} on {sys.platform} {platform.machine()}. "
             f"Set PYTHON to a 3.11 interpreter.")
PY

tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
# pip's settings off here too, so the tool itself comes from PyPI
no_pip_config=(env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL -u PIP_CONSTRAINT
               PIP_CONFIG_FILE=/dev/null)
"$python" -m venv "$tools/venv"
"${no_pip_config[@]}" "$tools/venv/bin/python" -m pip install --quiet 'pip-tools==7.7.0'

lock=requirements/lock.txt
"${no_pip_config[@]}" CUSTOM_COMPILE_COMMAND="requirements/update-lock.sh" \
    "$tools/venv/bin/pip-compile" --quiet --extra dev --generate-hashes --allow-unsafe \
    --strip-extras --no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
    --output-file "$lock" "$@" pyproject.toml requirements/ci.in

# pip-compile lists the project itself (its extras name it), as an unhashable `classicnets @
# file:///...` line: drop it, with the warning before it and its `# via` lines after it.
"$python" - "$lock" <<'PY'
import re
import sys
from pathlib import Path

path = Path(sys.argv[1])
out, skip = [], False
for line in path.read_text().splitlines():
    if line.startswith("# WARNING: pip install will require the following package to be hashed"):
        skip = True
        continue
    if skip and line.startswith("# Consider using a hashable URL"):
        continue
    if re.match(r"classicnets\s*@", line):
        skip = True
        continue
    if skip and line.startswith("    #"):
        continue
    skip = False
    out.append(line)
text = "\n".join(out) + "\n"
if "The generated requirements file may be rejected" in text or re.search(r"^\S+ @ ", text, re.M):
    sys.exit("update-lock.sh: the lock still has an unhashable line; see " + str(path))
path.write_text(text)
PY
echo "wrote $lock ($(grep -c '^[a-z0-9]' "$lock") packages; pip-compile's warning of a line pip"\
     "may reject is about the project's own line, dropped above)"
