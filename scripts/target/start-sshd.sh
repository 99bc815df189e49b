#!/bin/sh
# The command of the fleet's target image (localhost/flashmm-target:dev, scripts/build-images.sh):
# an SSH server for one FlashMM "host" of scripts/fleet.sh, in the foreground, as PID 1.
#   FLASHMM_TARGET_PORT   the port it listens on, on 127.0.0.1 only (the target shares the
#                         controller machine's network: see README, "Real hosts over SSH")
# Its host key and the user's authorized key are files fleet.sh mounts read-only into
# /etc/flashmm-target/; the login is the user flashmm (key only, no password), who may sudo.
set -eu
port="${FLASHMM_TARGET_PORT:?FLASHMM_TARGET_PORT is not set}"
key=/etc/flashmm-target/ssh_host_ed25519_key
[ -s "$key" ] || { echo "start-sshd: no host key at $key (scripts/fleet.sh mounts it)" >&2; exit 1; }
mkdir -p /run/sshd
exec /usr/sbin/sshd -D -e -f /dev/null \
  -o "Port=$port" -o ListenAddress=127.0.0.1 -o "HostKey=$key" \
  -o AuthorizedKeysFile=/etc/flashmm-target/authorized_keys \
  -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no -o PermitRootLogin=no \
  -o UsePAM=no -o AllowUsers=flashmm -o MaxStartups=100:30:200 -o MaxSessions=50 \
  -o Subsystem="sftp internal-sftp" -o PidFile=none
