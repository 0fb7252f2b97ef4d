# Sourced by the llama.cpp scripts: `llamacpp_venv FLAVOUR CMAKE_ARGS [EXTRA]` makes sure .cache/llamacpp-FLAVOUR
# holds llama-cpp-python (built from source with CMAKE_ARGS; about 15 minutes on 2 cores the first time), with the
# pip extra EXTRA (e.g. `server`) when given, and sets `venv` to it.
llamacpp_venv() {
  venv=".cache/llamacpp-$1"
  local module="llama_cpp" spec="llama-cpp-python"
  if [ -n "${3:-}" ]; then module="llama_cpp.$3.app"; spec="llama-cpp-python[$3]"; fi
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import $module" 2>/dev/null; then
    echo "building $spec ($1: $2) into $venv ..." >&2
    python3 -m venv "$venv"
    # --no-cache-dir: pip would otherwise reuse a wheel it built earlier with other CMAKE_ARGS (pip's wheel cache
    # is keyed by the source archive, not by the build flags), and the AVX2 build would be the native one.
    CMAKE_ARGS="$2" "$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir "$spec==${LLAMA_CPP_VERSION:-0.3.16}"
  fi
}
