#!/bin/sh
# The packages' post-install script (scripts/nfpm.yaml): after an install or
# an upgrade, systemd reads dso-agent.service again, and an agent that runs
# restarts on the new binary (it keeps the proxies, which outlive it, and
# its state). Nothing happens where systemd does not run, or no agent runs.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	systemctl try-restart dso-agent.service || true
fi
