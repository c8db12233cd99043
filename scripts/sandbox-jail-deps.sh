# Sourced by run.sh and test.sh: installs what the local sandbox jail needs (bubblewrap, passt)
# when this user can (root, or sudo without a password), and lets the sandbox users open
# /dev/net/tun, as Debian's udev rules do (some VMs and containers ship it 0600). Without these
# the server still runs, failing closed: one account only (see README, "the jail").
jail_as_root=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then jail_as_root="sudo"; else jail_as_root="no"; fi
fi
jail_need=()
command -v bwrap >/dev/null || jail_need+=(bubblewrap)
command -v pasta >/dev/null || jail_need+=(passt)
if [ ${#jail_need[@]} -gt 0 ]; then
  if [ "$jail_as_root" = "no" ]; then
    echo "note: the sandbox jail needs ${jail_need[*]} (apt-get install); without it this server serves one account" >&2
  else
    echo "installing: ${jail_need[*]}"
    $jail_as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $jail_as_root apt-get install -y -qq --no-install-recommends "${jail_need[@]}" >/dev/null
  fi
fi
if [ -c /dev/net/tun ] && [ "$(stat -c %a /dev/net/tun)" != "666" ] && [ "$jail_as_root" != "no" ]; then
  $jail_as_root chmod 0666 /dev/net/tun
fi
