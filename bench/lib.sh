# Shared by bench/compare.sh and bench/cluster.sh (sourced, not run).
# Broker ports come from below the ephemeral range, so no client socket holds them.
eph_lo=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range)
port=$((10000 + RANDOM % (eph_lo - 11000)))
# Sets $port to the next free port.
free_port() {
  port=$((port + 1))
  while (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null; do port=$((port + 1)); done
}

# BROKER_CPUS (default 0) and GEN_CPUS (default: every other CPU) for the scripts that pin.
pick_cpus() {
  local ncpu; ncpu=$(nproc)
  BROKER_CPUS=${BROKER_CPUS:-0}
  if [ -z "${GEN_CPUS:-}" ]; then
    GEN_CPUS=$(seq -s, 0 $((ncpu - 1)) | tr ',' '\n' | grep -vx "$BROKER_CPUS" | paste -sd, || true)
    [ -n "$GEN_CPUS" ] || GEN_CPUS=$BROKER_CPUS
  fi
}
