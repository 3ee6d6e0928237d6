#!/bin/bash
# --- azrun ---
# description = "Report uptime, disk and memory, a line at a time"
# timeout = 300
# [parameters.ROUNDS]
# type = "int"
# default = 3
# min = 1
# max = 10
# --- end ---
set -euo pipefail
echo "host $(hostname) kernel $(uname -r)"
for i in $(seq 1 "${ROUNDS:-3}"); do
  echo "round $i: load $(cut -d' ' -f1-3 /proc/loadavg), mem free $(awk '/MemAvailable/ {print int($2/1024)}' /proc/meminfo) MiB"
  sleep 1
done
df -h / | tail -1 | awk '{print "disk / used " $5}'
echo "done" >&2
