# Sourced by scripts/test.sh and scripts/demo.sh: system packages, virtualenv, project install.
# Idempotent and quiet when everything is already there.

_ft_need_apt=()
command -v python3 >/dev/null 2>&1 || _ft_need_apt+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || _ft_need_apt+=(python3-venv)
command -v redis-server >/dev/null 2>&1 || _ft_need_apt+=(redis-server)
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  _ft_need_apt+=(postgresql)
fi
# Browser tests drive Debian's Chromium (Playwright's own browser download cannot work here).
if [ "${FEDTRACK_SETUP_BROWSER:-1}" = "1" ] && ! command -v chromium >/dev/null 2>&1; then
  _ft_need_apt+=(chromium)
fi
if [ ${#_ft_need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing system packages: ${_ft_need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${_ft_need_apt[@]}" >/dev/null
    # Debian starts the packaged services on install; the tests start their own.
  else
    echo "missing system packages: ${_ft_need_apt[*]} (install them, or run as root on Debian)" >&2
    exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  python3 -m venv .venv
fi
_ft_stamp=.venv/.fedtrack-installed
if [ ! -f "$_ft_stamp" ] || [ pyproject.toml -nt "$_ft_stamp" ]; then
  echo "== installing fedtrack-redis and its test tools into .venv"
  # (grep drops the warnings some machines' pip configuration prints about absent mirrors)
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | { grep -v '^WARNING: Location' || true; }
  .venv/bin/python -m pip install -q -e ".[test,dev]" 2>&1 | { grep -v '^WARNING: Location' || true; }
  .venv/bin/python -c 'import fedtrack_redis, playwright, aiosmtpd, httpx' # fail here if the install missed a package
  touch "$_ft_stamp"
fi
