# Sourced by bin/abcgen and bin/test: make .venv in the checkout and (re)install
# the project into it when pyproject.toml, the constraints or the extras changed.
# Usage: abcgen_bootstrap EXTRAS   (e.g. "" or "test")
abcgen_bootstrap() {
    local extras=$1
    local root venv stamp want
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    venv="$root/.venv"
    stamp="$venv/.abcgen-installed"
    want=$(cat "$root/pyproject.toml" "$root/bin/constraints.txt" | sha256sum | cut -c1-16)
    # An install with the test extra also serves plain runs.
    if [ -f "$stamp" ] && { grep -qx "$want test" "$stamp" || grep -qx "$want $extras" "$stamp"; }; then
        return 0
    fi
    echo "abcgen: setting up $venv (first run or dependencies changed)..." >&2
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv" >&2 || { echo "abcgen: could not create $venv" >&2; return 1; }
    fi
    local target="$root"
    [ -n "$extras" ] && target="$root[$extras]"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -c "$root/bin/constraints.txt" -e "$target" 2>&1 \
        | { grep -v "is neither a file nor a directory" >&2 || true; }
    if [ "${PIPESTATUS[0]}" -ne 0 ]; then
        echo "abcgen: installing dependencies failed (see above)" >&2
        return 1
    fi
    echo "$want $extras" > "$stamp"
    echo "abcgen: set-up done." >&2
}
