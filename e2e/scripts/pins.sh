# shellcheck shell=bash
# Reads a KEY=value pin file (sourced, not executed): blank lines and # comments are skipped,
# and a variable already set in the environment overrides its pin.
read_pins() {
  local key value
  while IFS='=' read -r key value; do
    case $key in
      '' | '#'*) continue ;;
    esac
    if [ -z "${!key:-}" ]; then
      printf -v "$key" '%s' "$value"
    fi
  done <"$1"
}
