# Sourced (POSIX sh) by scripts/fetch-samples.sh and training/fetch_heldout.sh.
#
# fetch_deb DIR PKG VERSION: downloads PKG into DIR once (VERSION if the
# archive still has it, else the current candidate; one `apt-get update` and
# a retry when a download fails), unpacks it into DIR/PKG with dpkg-deb -x
# (nothing is installed) and prints the .deb's path. Exits on failure.
fetch_deb() {
  _fd_dir=$1 _fd_pkg=$2 _fd_ver=$3
  _fd_deb=$(ls "$_fd_dir/${_fd_pkg}"_*.deb 2>/dev/null | head -1 || true)
  if [ -z "$_fd_deb" ]; then
    _fd_ok=0 _fd_updated=0
    for _fd_try in "$_fd_pkg=$_fd_ver" "$_fd_pkg"; do
      # apt-get download writes into the current directory (-o
      # APT::Sandbox::User=root: no warning about the _apt user there).
      if (cd "$_fd_dir" && apt-get download -q -o APT::Sandbox::User=root "$_fd_try" >/dev/null 2>&1); then _fd_ok=1; break; fi
      if [ "$_fd_updated" = 0 ]; then
        echo "    apt-get update (download of $_fd_try failed)" >&2
        apt-get update -qq >/dev/null 2>&1 || true
        _fd_updated=1
        if (cd "$_fd_dir" && apt-get download -q -o APT::Sandbox::User=root "$_fd_try" >/dev/null 2>&1); then _fd_ok=1; break; fi
      fi
      echo "    warning: $_fd_try not downloadable, trying the current candidate" >&2
    done
    [ "$_fd_ok" = 1 ] || { echo "cannot download $_fd_pkg" >&2; exit 1; }
    _fd_deb=$(ls "$_fd_dir/${_fd_pkg}"_*.deb | head -1)
  fi
  if [ ! -d "$_fd_dir/$_fd_pkg" ]; then
    rm -rf "$_fd_dir/$_fd_pkg.tmp"
    dpkg-deb -x "$_fd_deb" "$_fd_dir/$_fd_pkg.tmp"
    mv "$_fd_dir/$_fd_pkg.tmp" "$_fd_dir/$_fd_pkg"
  fi
  echo "$_fd_deb"
}
